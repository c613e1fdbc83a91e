"""A stage that follows a TrainJob: it reports the job's states as they change, and when its pod is
stopped (SIGTERM) it deletes the TrainJob, so no GPU nodes keep training for nobody."""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading

import pytest
from kubernetes.client.exceptions import ApiException

from hala.trainjob import run_trainjob

RUNNING = {"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0, "suspended": 0}]}
COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "jobs completed"}]}
MANIFEST = {"metadata": {"name": "hala-r1-student-nano-s"}, "spec": {"trainer": {"numNodes": 2}}}


class StandInApi:
    """The CustomObjectsApi calls run_trainjob makes; each read moves the job to its next planned status."""

    def __init__(self, statuses):
        self.jobs: dict[str, dict] = {}
        self.statuses = collections.deque(statuses)
        self.created, self.deleted = [], []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if name not in self.jobs:
            raise ApiException(status=404, reason="Not Found")
        if len(self.statuses) > 1:
            self.jobs[name]["status"] = self.statuses.popleft()
        elif self.statuses:
            self.jobs[name]["status"] = self.statuses[0]  # the last planned status holds
        return self.jobs[name]

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.jobs[body["metadata"]["name"]] = {**body, "status": {}}
        self.created.append(body["metadata"]["name"])

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy=None):
        self.jobs.pop(name)
        self.deleted.append((name, propagation_policy))


def test_a_running_trainjob_is_followed_through_its_states_to_completion(caplog):
    api = StandInApi([{}, RUNNING, RUNNING, COMPLETE])
    with caplog.at_level(logging.INFO, logger="hala.trainjob"):
        run_trainjob(MANIFEST, "team-a", 0.01, api=api)
    states = [r.getMessage().split(": ", 1)[1].split(" after ")[0] for r in caplog.records if " after " in r.getMessage()]
    # Each change once, in order: the job waited for its controller, ran on two nodes, completed.
    assert states == ["Created (waiting for the Trainer controller)", "Running (2 active, 2 ready)", "Complete (JobsCompleted: jobs completed)"]
    assert api.created == ["hala-r1-student-nano-s"] and api.deleted == []


def test_a_stopped_stage_pod_deletes_its_trainjob(fault_record):
    api = StandInApi([{}, RUNNING])  # runs until it is stopped
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))  # as the kubelet stops a pod
    previous = signal.getsignal(signal.SIGTERM)
    timer.start()
    with pytest.raises(BaseException) as err:
        run_trainjob(MANIFEST, "team-a", 0.01, api=api)
    timer.join()
    assert type(err.value).__name__ == "_Stopped"  # re-raised: the stage ends as stopped, not as done
    assert api.deleted == [("hala-r1-student-nano-s", "Foreground")] and api.jobs == {}
    assert signal.getsignal(signal.SIGTERM) is previous  # the pod's own handler is back
    fault_record("process: SIGTERM to a stage pod following a running TrainJob",
                 "the TrainJob was deleted (foreground) before the stage ended as stopped")  # fmt: skip

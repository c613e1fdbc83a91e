#!/usr/bin/env bash
# Make podman able to build and run hala's images on this machine (CI and development): the
# Debian packages, then the settings this kind of machine needs. Run as root; without root or
# apt-get it says why and changes nothing (the container tests then skip, naming the reason).
set -euo pipefail

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "setup_containers: podman is missing and cannot be installed here (needs root and apt-get)" >&2
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq podman buildah runc debootstrap >/dev/null
fi

# runc, not crun: crun refuses this machine's hybrid cgroups. cgroupfs: no systemd here. No default
# ulimits: setting rlimits is refused in this sandbox.
conf=/etc/containers/containers.conf
if [ "$(id -u)" = 0 ] && ! grep -qs 'hala: setup_containers.sh' "$conf"; then
    if [ -s "$conf" ]; then
        echo "setup_containers: $conf exists and is not ours; leaving it as it is" >&2
    else
        mkdir -p /etc/containers
        cat >"$conf" <<'CONF'
# hala: setup_containers.sh
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
    fi
fi
podman info --format 'podman {{.Version.Version}}, runtime {{.Host.OCIRuntime.Name}}, cgroups {{.Host.CgroupsVersion}}'

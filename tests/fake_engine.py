"""A deterministic stand-in for a translation model, to test what surrounds the model.

It "translates" by wrapping each text's prose in Arabic markers (``ع[...]``) and keeps the
⟦n⟧ markers unless told to lose them; it records every request it got.
"""

from hala.engines import Completion

PROMPT = "Translate: {text}"


class FakeTranslator:
    name = "fake"

    def __init__(self, lose_markers=False, truncate_longer_than=None, answer_questions=False):
        self.lose_markers = lose_markers
        self.truncate_longer_than = truncate_longer_than
        self.answer_questions = answer_questions
        self.requests: list[str] = []
        self.closed = False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, conversations, generation, desc=""):
        out = []
        for conv in conversations:
            text = conv[-1]["content"].removeprefix("Translate: ")
            self.requests.append(text)
            if self.answer_questions and text.endswith("?"):
                out.append(Completion("نعم", 1, False))
                continue
            translated = f"ع[{text}]".replace("?", "؟")
            if self.lose_markers:
                translated = translated.replace("⟦1⟧", "")
            cut = self.truncate_longer_than is not None and len(text.split()) > self.truncate_longer_than
            out.append(Completion(translated, len(text.split()), cut))
        return out

    def chat(self, conversations, generation, desc=""):
        return [c.text for c in self.complete(conversations, generation, desc)]

    def close(self):
        self.closed = True

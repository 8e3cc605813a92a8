"""Segment Anything: model builders and checkpoints (:mod:`.build`), the prompting engine
(:mod:`.engine`) and prompt helpers (:mod:`.prompts`)."""

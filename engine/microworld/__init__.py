"""A procedural world of small scenes, small enough to train Familiar's architecture on a CPU.

`world` renders scenes with captions and question-answer pairs; `reader` is the world's attribute reader
(its stand-in for CLIP and DINO); `benchmark` measures personalization there; `identities` makes the demo
Aligner's training identities and held-out recognition tests.
"""

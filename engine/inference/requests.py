"""Requests to draw, told apart from questions by their wording, and rewritten as the model draws from.

"Draw <bo> at the beach", "Show me <bo> in the snow", "Make a picture of a red bus", "Can you paint <bo>?"
are imperative requests to draw. The model was taught to draw from descriptions ("A photo of <bo>."), not from
requests, so asked as written it often answers in words. `drawing_prompt` finds such a request and returns the
description it asks for in the form the model draws from ("A photo of <bo> at the beach."). Anything else
(a question, a bare description) is not a request; the automatic mode then lets the model decide.
"""

from __future__ import annotations

import re

_LEAD = re.compile(
    r"^(?:(?:please|kindly|ok|okay|hey|now)\b[,!]?\s*)*"
    r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?|i(?:'d|\s+would)\s+like\s+(?:you\s+)?to\s+"
    r"|i\s+want\s+(?:you\s+)?to\s+)?",
    re.IGNORECASE,
)
_DRAW = re.compile(r"^(?:draw|paint|sketch|illustrate|render|show)\b(?:\s+(?:me|us))?\s+", re.IGNORECASE)
_MAKE = re.compile(r"^(?:make|create|generate|produce|give|send|get)\b(?:\s+(?:me|us))?\s+", re.IGNORECASE)
_PICTURE_OF = re.compile(
    r"^(?:(?:a|an|one|the|another|some)\s+)?(?:[\w-]+\s+){0,2}?"
    r"(?:pictures?|photos?|photographs?|images?|drawings?|paintings?|sketch(?:es)?|illustrations?|pics?|renders?)"
    r"\s+(?:of|showing|with)\s+",
    re.IGNORECASE,
)
_LOOKS_LIKE = re.compile(r"^what\s+(.+?)\s+(?:looks?|would\s+look)\s+like$", re.IGNORECASE)
_QUESTION_WORD = re.compile(r"^(?:how|why|when|where|which|who|whether|if|what)\b", re.IGNORECASE)
_END = re.compile(r"(?:[\s,]*\bplease)?[\s.!?,;:]*$", re.IGNORECASE)


def drawing_prompt(text: str) -> str | None:
    """ "A photo of <what is asked for>." when `text` is a request to draw, else None.

    A verb that only makes sense with a picture (draw, paint, sketch, illustrate, render, show) is a request on
    its own, unless a question word follows ("show me how to ..."); make, create, generate, give, send and get
    are one only with the picture named ("make a picture of ..."), so "make <bo> a cake" is not one."""
    rest = _LEAD.sub("", text.strip(), count=1)
    if found := _DRAW.match(rest):
        rest = _PICTURE_OF.sub("", rest[found.end() :], count=1)
    elif (found := _MAKE.match(rest)) and (picture := _PICTURE_OF.match(rest[found.end() :])):
        rest = rest[found.end() + picture.end() :]
    else:
        return None
    rest = _END.sub("", rest).strip()
    if looks := _LOOKS_LIKE.match(rest):
        rest = looks.group(1)
    elif _QUESTION_WORD.match(rest):
        return None
    return f"A photo of {rest}." if rest else None

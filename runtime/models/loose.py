"""Values as Node-RED writes them in flow files: numbers and booleans often as text.

Node-RED's editor keeps what a form field held, so one file has ``"qos": "2"``, another
``"qos": 2``; ``"once": false`` and ``"retain": "false"``; ``"repeat": ""`` for no repetition. A config
field typed with one of these accepts both forms (the codec's hooks do the reading), and still
refuses what is neither, with its JSON path.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["LooseBool", "LooseFloat", "LooseInt", "LooseStr"]

# 2 or "2" (surrounding spaces allowed)
LooseInt = NewType("LooseInt", int)
# 1.5 or "1.5"; "" is not a number
LooseFloat = NewType("LooseFloat", float)
# true/false or "true"/"false"; "" is false, as Node-RED reads an unset checkbox
LooseBool = NewType("LooseBool", bool)
# text, or a number or boolean as its text (2 -> "2"): for fields where "" means "not set"
LooseStr = NewType("LooseStr", str)

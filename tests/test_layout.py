"""The package's layout: the codec, the wire format and the transport import without torch (a
sender or a tool that only reads streams never loads a network's dependencies)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["talkcodec.codec", "talkcodec.bitstream", "talkcodec.transport", "talkcodec.cli"],
)
def test_import_does_not_load_torch(module: str) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "import talkcodec.transport.peer, talkcodec.transport.control; "
        "heavy = sorted(m for m in ('torch', 'scipy') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"

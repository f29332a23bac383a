"""Reading and writing files the way every command does (docs/formats.md).

Each concept has its own module; this one gathers their names for the callers that
import them from here:

- `_errors`: what is wrong with a line of input (InputError, msgspec's messages in words);
- `_open`: `-` as stdin, gzip read transparently, a file read once (InMemoryFile, StreamedFile);
- `_atomic`: outputs written atomically, alone or as a set;
- `_blocks`: JSON lines decoded a block at a time, with boundaries fixed by the content.
"""

from __future__ import annotations

from ..errors import InputError, show_value
from ._atomic import (
    atomic_output,
    overwrites_input,
    part_file,
    remove_stale_temps,
    temp_folder_for,
    temp_path_for,
    write_outputs,
)
from ._blocks import (
    DEFAULT_BLOCK_BYTES,
    DecodedBlock,
    block_boundary,
    decode_block,
    gc_paused,
    iter_blocks,
    iter_decoded_lines,
    usable_cpus,
)
from ._errors import DECODE_ERRORS, explain_line, explain_validation, os_input_error
from ._open import (
    STDIO,
    InMemoryFile,
    StreamedFile,
    display_name,
    is_plain_file,
    open_binary,
    open_regular,
    open_text_lines,
    read_bytes,
    read_once,
    read_text,
)

__all__ = [
    "overwrites_input",
    "DECODE_ERRORS",
    "DEFAULT_BLOCK_BYTES",
    "STDIO",
    "DecodedBlock",
    "InMemoryFile",
    "InputError",
    "StreamedFile",
    "atomic_output",
    "block_boundary",
    "decode_block",
    "display_name",
    "explain_line",
    "explain_validation",
    "gc_paused",
    "is_plain_file",
    "iter_blocks",
    "iter_decoded_lines",
    "open_binary",
    "open_regular",
    "open_text_lines",
    "os_input_error",
    "part_file",
    "read_bytes",
    "read_once",
    "read_text",
    "remove_stale_temps",
    "show_value",
    "temp_folder_for",
    "temp_path_for",
    "usable_cpus",
    "write_outputs",
]

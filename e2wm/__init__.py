"""e2wm: teach language models about the physical world from embodied experience."""

import logging

# bitsandbytes (imported by peft and trl) logs on every CPU import that an optional 4-bit kernel
# package is missing; e2wm never runs 4-bit kernels on CPU, so the line is noise before any output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

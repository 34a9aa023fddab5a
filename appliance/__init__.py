"""Speech-to-text edge appliance: streaming Whisper transcription over gRPC."""

import os as _os

__version__ = "0.1.0"

# CTranslate2's CPU kernels run on OpenMP, whose idle threads spin (Intel's for 200 ms) by default.
# With VAD and gRPC threads sharing the cores, that spinning turned 0.6 s decodes into 2-7 s ones
# (2 cores: worst decode RTF 2.3 -> 0.5). OpenMP reads these once, when the library loads, so they
# are set here, before any module of the appliance (backend, hardware probe) can import ctranslate2.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("KMP_BLOCKTIME", "0")

"""Imports every family's HuggingFace converter so that it registers itself."""

import formerkit.interop.hf_bert  # noqa: F401,E402
import formerkit.interop.hf_gpt2  # noqa: F401,E402
import formerkit.interop.hf_marian  # noqa: F401,E402

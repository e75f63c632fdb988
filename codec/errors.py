"""The codec's exceptions. The codec depends on nothing else of temposplit's."""


class CodecError(ValueError):
    """Base of every error the codec raises for bad input or configuration."""


class ConfigurationError(CodecError):
    """A coding parameter is out of range or inconsistent."""


class BitstreamError(CodecError):
    """A stream or packet is malformed, truncated, or fails its CRC."""


class TruncatedError(BitstreamError):
    """The input ends before the structure it announced."""


class ChecksumError(BitstreamError):
    """A CRC-32 does not match: the bytes were damaged."""


class LimitError(BitstreamError):
    """A field announces a size past the decoder's explicit limits."""


class ReferenceMissingError(BitstreamError):
    """A packet depends on a frame or table the decoder does not hold (lost or not yet sent)."""

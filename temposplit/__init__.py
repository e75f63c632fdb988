"""temposplit: split video object detection across a Zynq edge board and a server.

The package maps the repository's folders into one namespace:

- ``temposplit.codec``      golden codec (requantizer, TSS, entropy coders, bitstream)
- ``temposplit.model``      detectors, int8 quantization, cut points, M1/M2
- ``temposplit.hw``         Amaranth gateware, register map and accelerator driver
- ``temposplit.host``       the edge program
- ``temposplit.server``     the cloud server
- ``temposplit.evaluation`` the rate/accuracy harness
"""

__version__ = "0.1.0"

"""The fabric: Amaranth gateware, the register map and the accelerator driver."""

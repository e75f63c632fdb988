"""The edge program: frames -> M1 -> accelerator -> packets -> network."""

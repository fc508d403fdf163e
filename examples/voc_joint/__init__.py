"""PASCAL VOC joint DeepLabV3+ + SpixelFCN pipeline (synthetic VOC-format demo bundled)."""

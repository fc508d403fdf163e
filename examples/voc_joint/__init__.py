"""The joint DeepLabV3+ + SpixelFCN pipeline on PASCAL VOC format data (real or synthetic)."""

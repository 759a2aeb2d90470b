"""Prints a complete summary block, as karpathy/autoresearch's train.py does."""

print("step 1 done")
print("---")
print("val_bpb:          0.987654")
print("training_seconds: 0.25")
print("peak_vram_mb:     12.5")

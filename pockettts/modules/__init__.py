"""Building blocks with no training logic: streaming convs, SEANet, transformer, discriminators."""

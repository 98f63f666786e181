"""dispenser: controller for automated pharmacy dispensing machines."""

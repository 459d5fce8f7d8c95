"""The LightningDataModules (2D slices, 3D patches, mortality volumes), their case type and the
contract every one of them offers a task (``TaskData``)."""

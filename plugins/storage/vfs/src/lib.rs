//! berth storage driver vfs: every layer a full copy of its parent

//! One module per verb group.

pub mod image;
pub mod plugin;
pub mod system;
pub mod volume;

//! berth core

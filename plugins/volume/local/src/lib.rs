//! berth volume driver local: directories under the daemon root

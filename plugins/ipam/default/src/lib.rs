//! berth IPAM driver default: pools and addresses

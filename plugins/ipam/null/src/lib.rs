//! berth IPAM driver `null`: Docker's null IPAM. It satisfies the IPAM
//! contract without reserving anything, for networks whose driver takes no
//! addresses (`none`, `host`, or a network driver that manages its own).
//!
//! * Address spaces: `null` for both local and global (an empty space means
//!   `null` too); any other space is an invalid-argument error.
//! * [`request_pool`](IpamDriver::request_pool) answers pool `0.0.0.0/0`
//!   with the fixed id `null/0.0.0.0/0`, or `::/0` with id `null/::/0` when
//!   `V6` is set, every time: nothing is reserved, so the same answer may
//!   be live any number of times. A request naming a pool or a sub-pool is
//!   an invalid-argument error (the null driver does not handle specific
//!   pools).
//! * [`request_address`](IpamDriver::request_address) answers no address
//!   (an empty `Address`) and no data, for the gateway too; an unknown pool
//!   id is an invalid-argument error.
//! * [`release_pool`](IpamDriver::release_pool) always succeeds;
//!   [`release_address`](IpamDriver::release_address) succeeds for the two
//!   pool ids and is an invalid-argument error for any other.
//!
//! No state, no options (an unknown key is refused), no root needed.
//! This is moby's `libnetwork/ipams/null` exactly, in berth's error kinds.

#![deny(missing_docs)]

pub mod export;

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, IpamDriver};
use serde::{Deserialize, Serialize};

/// The null driver's one address space (local and global).
pub const ADDRESS_SPACE: &str = "null";
/// The IPv4 pool every request gets.
pub const POOL_V4: &str = "0.0.0.0/0";
/// The IPv6 pool every request gets.
pub const POOL_V6: &str = "::/0";
/// The id of [`POOL_V4`].
pub const POOL_ID_V4: &str = "null/0.0.0.0/0";
/// The id of [`POOL_V6`].
pub const POOL_ID_V6: &str = "null/::/0";

/// The driver's options from the configuration: none, and an unknown key is
/// refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {}

/// The null IPAM driver. See the [crate documentation](crate).
#[derive(Debug, Default)]
pub struct NullIpamDriver {}

impl NullIpamDriver {
    /// Builds the driver; the only check is that no options are given.
    pub fn new(req: InitRequest) -> DriverResult<Init<NullIpamDriver>> {
        let _opts: Opts = req.decode_options()?;
        Ok(Init::Ready(NullIpamDriver {}))
    }
}

fn check_pool_id(pool_id: &str) -> DriverResult<()> {
    if pool_id == POOL_ID_V4 || pool_id == POOL_ID_V6 {
        return Ok(());
    }
    Err(DriverError::invalid_argument(format!(
        "unknown pool id {pool_id:?}: the null IPAM driver has only {POOL_ID_V4:?} and {POOL_ID_V6:?}"
    )))
}

impl IpamDriver for NullIpamDriver {
    fn capabilities(&self, _req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        // Nothing to replay, no MAC wanted.
        Ok(IpamCapabilities::default())
    }

    fn default_address_spaces(&self, _req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        Ok(AddressSpaces::new(ADDRESS_SPACE, ADDRESS_SPACE))
    }

    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        if !req.address_space.is_empty() && req.address_space != ADDRESS_SPACE {
            return Err(DriverError::invalid_argument(format!(
                "unknown address space {:?}: the null IPAM driver has only {ADDRESS_SPACE:?}",
                req.address_space
            )));
        }
        if !req.pool.is_empty() {
            return Err(DriverError::invalid_argument(format!(
                "the null IPAM driver does not handle specific pool requests (pool {}); \
                 use another IPAM driver to give the network a subnet",
                req.pool
            )));
        }
        if !req.sub_pool.is_empty() {
            return Err(DriverError::invalid_argument(format!(
                "the null IPAM driver does not handle specific sub-pool requests (sub-pool {})",
                req.sub_pool
            )));
        }
        Ok(if req.v6 {
            RequestPoolResponse::new(POOL_ID_V6, POOL_V6)
        } else {
            RequestPoolResponse::new(POOL_ID_V4, POOL_V4)
        })
    }

    fn release_pool(&self, _req: ReleasePoolRequest) -> DriverResult<()> {
        Ok(())
    }

    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        check_pool_id(&req.pool_id)?;
        Ok(RequestAddressResponse::default())
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        check_pool_id(&req.pool_id)
    }
}

//! A small synchronous rtnetlink client: links and addresses in the
//! network namespace of the calling thread, over a plain `NETLINK_ROUTE`
//! socket (no async runtime: the drivers are shared objects loaded into
//! the daemon). Compiled into the `bridge` and `macvlan` crates with
//! `#[path]` so it exists once.
//!
//! Every request asks for an acknowledgement and waits for it, so an error
//! is the kernel's errno as an [`io::Error`]. A socket belongs to the
//! namespace it was opened in; open one per operation ([`Rtnl::open`] is a
//! single `socket(2)` + `bind(2)`), which keeps tests that move threads
//! between namespaces honest.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind, InfoVeth, InfoVlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What the drivers need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `vlan`, `macvlan`, …), if any.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// The bridge (or other controller) the link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_LINK`: the lower link of a vlan or macvlan.
    pub parent: Option<u32>,
    /// `IFF_UP` is set.
    pub up: bool,
    /// The hardware address.
    pub mac: Vec<u8>,
    /// The macvlan mode, for macvlan links.
    pub macvlan_mode: Option<MacVlanMode>,
    /// The VLAN id, for vlan links.
    pub vlan_id: Option<u16>,
}

/// An open rtnetlink socket.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Whether `e` is the kernel's "no such device" (the link is gone).
pub fn is_no_device(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOENT))
}

/// Whether `e` says the kernel does not know the link type asked for
/// (`dummy` on a kernel without it).
pub fn is_unknown_kind(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP))
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends `msg` and collects the answers until the kernel acknowledges
    /// it (or, for a dump, says done).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..]).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("bad netlink reply: {e}"))
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink reply of length 0"));
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(errno(-code.get())),
                            None => Ok(answers),
                        }
                    }
                    NetlinkPayload::Done(_) if dump => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }

    fn change(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, NLM_F_ACK | flags).map(|_| ())
    }

    /// The link called `name`, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK) {
            Ok(answers) => Ok(answers.into_iter().find_map(link_of)),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with index `index`, if there is one.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK) {
            Ok(answers) => Ok(answers.into_iter().find_map(link_of)),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let answers = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(answers.into_iter().filter_map(link_of).collect())
    }

    fn new_link(&mut self, msg: LinkMessage) -> io::Result<()> {
        self.change(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates bridge `name`, up, with `mtu` if given.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<()> {
        let mut msg = base_link(name, mtu, None, true);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.new_link(msg)
    }

    /// Creates a dummy link `name`, up.
    pub fn add_dummy(&mut self, name: &str) -> io::Result<()> {
        let mut msg = base_link(name, None, None, true);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]));
        self.new_link(msg)
    }

    /// Creates the veth pair `host` – `peer`: `host` is up and enslaved to
    /// `master` when given, `peer` stays down with `peer_mac` if given; both
    /// get `mtu`.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
        master: Option<u32>,
    ) -> io::Result<()> {
        self.add_veth_into(host, peer, mtu, peer_mac, master, None)
    }

    /// [`Rtnl::add_veth`] with the peer made directly in the network
    /// namespace open as `peer_netns` (when given): no namespace move
    /// afterwards, which costs the kernel an RCU grace period (~17 ms).
    pub fn add_veth_into(
        &mut self,
        host: &str,
        peer: &str,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
        master: Option<u32>,
        peer_netns: Option<std::os::fd::RawFd>,
    ) -> io::Result<()> {
        let mut msg = base_link(host, Some(mtu), None, true);
        if let Some(m) = master {
            msg.attributes.push(LinkAttribute::Controller(m));
        }
        let mut peer_msg = base_link(peer, Some(mtu), peer_mac, false);
        if let Some(fd) = peer_netns {
            peer_msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.new_link(msg)
    }

    /// Creates macvlan link `name` on `parent` in `mode`, down.
    pub fn add_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let mut msg = base_link(name, mtu, mac, false);
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
        ]));
        self.new_link(msg)
    }

    /// Creates the 802.1Q sub-interface `name` with VLAN `id` on `parent`, up.
    pub fn add_vlan(&mut self, name: &str, parent: u32, id: u16) -> io::Result<()> {
        let mut msg = base_link(name, None, None, true);
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
        ]));
        self.new_link(msg)
    }

    /// Sets link `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.change(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets the bridge port flags `hairpin` (frames may go back out of
    /// the port they came in by) and `isolated` (isolated ports forward
    /// only to ports that are not isolated) of port `index`.
    pub fn set_bridge_port(&mut self, index: u32, hairpin: bool, isolated: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::HairpinMode(hairpin),
                InfoBridgePort::Isolated(isolated),
            ])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Deletes link `index`; `Ok(false)` when it was already gone.
    pub fn delete_link(&mut self, index: u32) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.change(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if is_no_device(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the link called `name`; `Ok(false)` when there is none.
    pub fn delete_link_by_name(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.change(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if is_no_device(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The addresses of link `index` (with their prefix lengths).
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<IpNet>> {
        let answers = self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewAddress(m) = a else { continue };
            if m.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address on point-to-point
            // links; IFA_ADDRESS otherwise.
            let addr = m
                .attributes
                .iter()
                .find_map(|a| if let AddressAttribute::Local(ip) = a { Some(*ip) } else { None })
                .or_else(|| {
                    m.attributes.iter().find_map(|a| {
                        if let AddressAttribute::Address(ip) = a {
                            Some(*ip)
                        } else {
                            None
                        }
                    })
                });
            if let Some(net) = addr.and_then(|ip| IpNet::new(ip, m.header.prefix_len).ok()) {
                out.push(net);
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, net: IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = match net.addr() {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if let IpNet::V4(v4) = net {
            if v4.prefix_len() < 31 {
                msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        msg
    }

    /// Adds `net` (address and prefix length) to link `index`; `Ok(false)`
    /// when the link already has it.
    pub fn add_address(&mut self, index: u32, net: IpNet) -> io::Result<bool> {
        let msg = Self::address_message(index, net);
        match self.change(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `net` from link `index`; `Ok(false)` when it was not there.
    pub fn delete_address(&mut self, index: u32, net: IpNet) -> io::Result<bool> {
        let msg = Self::address_message(index, net);
        match self.change(RouteNetlinkMessage::DelAddress(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn base_link(name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    if up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    msg
}

fn link_of(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(m) = msg else { return None };
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        master: None,
        parent: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mac: Vec::new(),
        macvlan_mode: None,
        vlan_id: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(i) => link.master = Some(i),
            LinkAttribute::Link(i) => link.parent = Some(i),
            LinkAttribute::Address(a) => link.mac = a,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::MacVlan(d)) => {
                            link.macvlan_mode = d.into_iter().find_map(|x| {
                                if let InfoMacVlan::Mode(m) = x {
                                    Some(m)
                                } else {
                                    None
                                }
                            })
                        }
                        LinkInfo::Data(InfoData::Vlan(d)) => {
                            link.vlan_id =
                                d.into_iter()
                                    .find_map(|x| if let InfoVlan::Id(i) = x { Some(i) } else { None })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

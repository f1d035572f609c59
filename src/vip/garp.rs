//! Gratuitous ARP: after taking an IPv4 address, the new holder tells every neighbour on the
//! link which hardware address it now answers at, so clients and routers stop sending to the old
//! holder at once instead of when their ARP cache entry expires (keepalived, Pgpool-II's
//! `arping_cmd` and vip-manager do the same).
//!
//! [`frame`] is the codec (pure); [`announce`] sends it on a packet socket (CAP_NET_RAW).

use std::net::Ipv4Addr;
use std::time::Duration;

use nix::libc;

/// Length of an Ethernet frame carrying an ARP packet (without padding; the kernel pads).
pub const FRAME_LEN: usize = 42;
const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A gratuitous ARP request for `ip` from `mac`, broadcast: sender and target protocol address
/// are both `ip` (RFC 5227's ARP Announcement), which every Linux, BSD and router updates its
/// cache from.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Hardware Ethernet (1), protocol IPv4 (0x0800), lengths 6 and 4, operation request (1).
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address: unknown (zero) in a request.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The hardware address and index of `interface`.
pub fn link(interface: &str) -> Result<([u8; 6], u32), String> {
    let index = nix::net::if_::if_nametoindex(interface).map_err(|e| format!("interface {interface}: {e}"))?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces: {e}"))?;
    let mac = addrs
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().and_then(|l| l.addr())))
        .ok_or_else(|| format!("interface {interface} has no hardware address"))?;
    Ok((mac, index))
}

/// Sends `count` announcements for `ip` on `interface`, `gap` apart (blocking: run it off the
/// async threads).
pub fn announce(interface: &str, ip: Ipv4Addr, count: u32, gap: Duration) -> Result<(), String> {
    if count == 0 {
        return Ok(());
    }
    let (mac, index) = link(interface)?;
    let packet = frame(mac, ip);
    // SAFETY: plain socket calls on a descriptor this function owns; the address structure is
    // fully initialised and its size passed with it.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be()));
        if fd < 0 {
            return Err(format!(
                "a packet socket for gratuitous ARP: {} (the agent needs CAP_NET_RAW)",
                std::io::Error::last_os_error()
            ));
        }
        let mut to: libc::sockaddr_ll = std::mem::zeroed();
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&BROADCAST);
        let mut result = Ok(());
        for i in 0..count {
            if i > 0 {
                std::thread::sleep(gap);
            }
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                result = Err(format!("gratuitous ARP on {interface}: {}", std::io::Error::last_os_error()));
                break;
            }
        }
        libc::close(fd);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_names_the_address_as_sender_and_target() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        let f = frame(mac, Ipv4Addr::new(10, 0, 0, 100));
        let want: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06, // Ethernet
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // ARP request
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 10, 0, 0, 100, // sender
            0, 0, 0, 0, 0, 0, 10, 0, 0, 100, // target
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn an_unknown_interface_is_named() {
        let e = announce("rampart-nope0", Ipv4Addr::new(10, 0, 0, 1), 1, Duration::ZERO).unwrap_err();
        assert!(e.contains("interface rampart-nope0"), "{e}");
    }
}

"""The device layer: the TUN the stack talks through, and what sits on it.

* ``tun.Tun`` / ``tun.DeviceError`` - open or create the TUN (vnet header, offload).
* ``vnet`` - the virtio-net header in front of every frame (Python side;
  the Cython struct is ``misdtcp/_vnet.pxd``).
* ``netns`` - namespaces, veth pairs, nftables loss, a bounded ICMP pinger.
* ``misdtcp._faults.FaultInjector`` - seeded drop/corrupt/duplicate/reorder/delay.
* ``pcap.PcapWriter`` - capture both directions to a pcap file.

Submodules are imported on use: ``from misdtcp.device.tun import Tun``.
"""

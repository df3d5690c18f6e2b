"""The device layer: where frames enter and leave the stack.

* ``tun.Tun`` / ``tun.DeviceError`` - open or create the TUN (vnet header, offload);
* ``netns.Netns`` - the network namespaces every device lives in;
* ``veth.VethPair`` - two namespaces joined by a veth pair.

Per-frame stages (fault injection, pcap) are in ``misdtcp.frameio``.
Submodules are imported on use: ``from misdtcp.device.tun import Tun``.
"""

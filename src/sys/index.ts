// src/sys: the only module that talks to the kernel through FFI.
export * as libc from './libc.ts';
export { Epoll, EventFd } from './epoll.ts';
export { openTap, setPersist, setOffload, setSndbuf, getSndbuf, closeFd, VNET_HDR_LEN, type Tap, type TapOptions } from './tun.ts';
export { withNetns, netnsPath, netnsExists, NETNS_RUN_DIR } from './netns.ts';
export { mapShared, unmap, memfd, PIER_SEALS, type Mapping } from './mem.ts';
export { checkPeerEventFd, signalPeer, drainPeer, watchPeerWrites, PeerWriteWatchdog, peerWatchBuffer, W_SEQ, W_TID, W_WAKES } from './peer-fd.ts';
export { sigbusGuard, guardRange, faultCount, faultAddress, guardStatus, caughtSignals, installWakeSignal, wakeThread, FAULT_RING, WAKE_SIGNAL, type SigbusGuard, type GuardStatus } from './signals.ts';
export { unixListen, unixConnect, unixAccept, FdReceiver, sendWithFds, MAX_FDS } from './unix.ts';
export { ip, configureLink, linkInfo, linkChannels, linkExists, addRoutes, deleteLink, setSysctl, IpError, type LinkInfo, type LinkConfig, type RouteConfig } from './iproute.ts';
export { Rtnl, withRtnl, NetlinkError, parseAddr, parsePrefix, type IpAddr, type IpPrefix, type RtLink, type LinkChange } from './netlink.ts';
export { hasNetAdmin, hasSysAdmin } from './caps.ts';
export { VhostKernel, openVhostNet } from './vhost-kernel.ts';
export { openPacketSocket, closePacketSocket, readPacketStats, socketError, boundIfindex, kick as packetKick, type PacketSocket, type PacketSocketOptions, type PacketStats, type RingGeometry } from './packet.ts';
export * as packet from './packet.ts';

//! Linux XFRM over netlink (placeholder until the ipsec-backend issue lands).

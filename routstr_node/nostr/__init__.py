"""Nostr for the node: signed events, relay traffic, the NIP-91 announcement of this
node (and its withdrawal, NIP-09) and the directory of other nodes announced on the
configured relays."""

"""The upstream bridge (DESIGN §7): durable store-and-forward between this gateway's broker and
a broker or cluster the user already runs."""

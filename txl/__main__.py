from txl import console

raise SystemExit(console())

"""The ground every other package stands on: the one-line error type, atomic files, tables, folder locks,
Ctrl-C as a request, messages, statistics, the scales, devices and torchrun's ranks. Imports nothing of txl above it."""

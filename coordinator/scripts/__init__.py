"""The Lua scripts of the store: each one atomic step, with a KEYS/ARGV header; lib.lua is
prepended to every script."""

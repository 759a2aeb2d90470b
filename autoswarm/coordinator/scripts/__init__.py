"""The Lua scripts of the store: each one atomic step, with a KEYS/ARGV header and its keys
and arguments bound to named locals at the top; lib.lua (the helpers and the constants the
scripts share, such as the event stream's length) is prepended to every script."""

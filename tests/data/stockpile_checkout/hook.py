# Stand-in for a Caldera plugin's hook.py: code, not content; the loader must not read it.
name = "stockpile-shaped"

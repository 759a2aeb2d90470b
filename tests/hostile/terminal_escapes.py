"""Attack: terminal escape sequences and rich markup in the log, for the operator's terminal
(`autoswarm task run`, `autoswarm show`): set the window title, clear the screen, write the
clipboard (OSC 52), fake a coloured line and a link."""

import sys

ESC = "\x1b"
print(f"{ESC}]0;OWNED-title\x07{ESC}[2J{ESC}[H")
print(f"{ESC}]52;c;cm0gLXJmIH4K\x07")
print("[bold green]all experiments kept[/bold green] [link=file:///etc/passwd]open[/link]")
print("---")
print("val_bpb: 1.0")
print(f"note: {ESC}[31mred\rCR\x08BS [blink]markup[/blink]")
sys.exit(f"{ESC}[2J[red]fake-error[/red] {ESC}]0;OWNED-exit\x07")

#!/usr/bin/env python3
"""Draws the card's accumulator-bound sweep (docs/benchmarks.md, "The card under a declared
accumulator bound") as an SVG: Fhe seconds per inference and Clear accuracy for each `acc`.

    python3 tools/plot_acc_sweep.py [docs/benchmarks.md] [docs/figures/card_acc_sweep.svg]

Reads the table from the Markdown, so the figure follows the measured numbers; standard
library only.
"""
import re
import sys

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.md"
TARGET = sys.argv[2] if len(sys.argv) > 2 else "docs/figures/card_acc_sweep.svg"


def rows(markdown):
    """(label, accuracy %, seconds, key MB) for each row of the sweep table."""
    section = markdown.split("## The card under a declared accumulator bound", 1)[1]
    out = []
    for line in section.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.match(r"^(none|\d+)", cells[0]):
            continue
        label = cells[0].split()[0]
        accuracy = float(cells[2].strip("*%"))
        seconds = float(cells[4].strip("*"))
        key = float(cells[5].strip("*"))
        out.append((label, accuracy, seconds, key))
    if not out:
        sys.exit(f"{SOURCE}: no sweep table found")
    return out


def svg(data):
    width, height, left, right, top, bottom = 640, 360, 60, 60, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / len(data)
    max_s = max(s for _, _, s, _ in data) * 1.1
    acc_lo, acc_hi = 90.0, 96.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">'
        "Card 784-128-10: declared accumulator bound (acc) vs Fhe time and Clear accuracy</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left + plot_w}" y1="{top}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<text x="15" y="{top + plot_h / 2}" transform="rotate(-90 15 {top + plot_h / 2})" '
        'text-anchor="middle" fill="steelblue">Fhe s / inference (bars)</text>',
        f'<text x="{width - 15}" y="{top + plot_h / 2}" transform="rotate(90 {width - 15} '
        f'{top + plot_h / 2})" text-anchor="middle" fill="darkred">Clear accuracy % (line)</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">acc (bits); '
        "label: evaluation key MB</text>",
    ]
    for tick in range(0, int(max_s) + 1, 2):
        y = top + plot_h - tick / max_s * plot_h
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{tick}</text>')
    for tick in range(int(acc_lo), int(acc_hi) + 1, 2):
        y = top + plot_h - (tick - acc_lo) / (acc_hi - acc_lo) * plot_h
        parts.append(f'<text x="{left + plot_w + 8}" y="{y + 4}">{tick}</text>')
    points = []
    for i, (label, accuracy, seconds, key) in enumerate(data):
        x = left + i * step + step * 0.2
        bar_h = seconds / max_s * plot_h
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{step * 0.6:.1f}" '
            f'height="{bar_h:.1f}" fill="steelblue"/>'
        )
        parts.append(
            f'<text x="{x + step * 0.3:.1f}" y="{top + plot_h - bar_h - 4:.1f}" '
            f'text-anchor="middle" font-size="10">{key:g} MB</text>'
        )
        parts.append(
            f'<text x="{x + step * 0.3:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{label}</text>'
        )
        y = top + plot_h - (accuracy - acc_lo) / (acc_hi - acc_lo) * plot_h
        points.append((x + step * 0.3, y, accuracy))
    parts.append(
        '<polyline fill="none" stroke="darkred" stroke-width="2" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        + '"/>'
    )
    for x, y, accuracy in points:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="darkred"/>')
        parts.append(
            f'<text x="{x + 5:.1f}" y="{y - 5:.1f}" fill="darkred" font-size="10">{accuracy:g}%</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


with open(SOURCE, encoding="utf-8") as f:
    data = rows(f.read())
with open(TARGET, "w", encoding="utf-8") as f:
    f.write(svg(data))
print(f"{TARGET}: {len(data)} bounds")

#!/usr/bin/env python3
"""Draw the hot ad's load per partition, without and with salting, as an SVG (no plotting
library: the SVG is written by hand).

    python3 plot.py out/load-unsalted.json out/load-salted.json --out out/salting.svg

Each input is a --stats file of generate.py. One panel per file: a bar per partition, the
share of the hot ad's clicks that landed there, and a dashed line at the fair share
(1 / partitions).
"""

import argparse
import json
from xml.sax.saxutils import escape

W, H = 360, 260  # one panel
TOP, BOTTOM, LEFT, RIGHT = 56, 40, 44, 16


def panel(stats, x0):
    n = stats["partitions"]
    shares = [c / max(1, stats["hot_clicks"]) for c in stats["hot_per_partition"]]
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    y_of = lambda share: TOP + plot_h * (1 - share)  # noqa: E731
    if stats["salted"]:
        title = f"{stats['salts']} salts per ad" + (" (blind)" if stats.get("blind_salts") else "")
    else:
        title = "without salting"
    out = [
        f'<g transform="translate({x0},0)">',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
        f'<text x="{W / 2}" y="38" text-anchor="middle" font-size="11" fill="#555">'
        f'busiest partition: {max(shares):.0%} of {escape(stats["hot_ad"])}\'s '
        f'{stats["hot_clicks"]} clicks</text>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        y = y_of(tick)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick:.0%}</text>')
    slot = plot_w / n
    for p, share in enumerate(shares):
        x = LEFT + p * slot + slot * 0.15
        y = y_of(share)
        colour = "#d9534f" if share > 1.5 / n else "#4a90d9"
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                   f'height="{TOP + plot_h - y:.1f}" fill="{colour}"/>')
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                   f'font-size="10">{share:.0%}</text>')
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" '
                   f'font-size="11">p{p}</text>')
    fair = y_of(1 / n)
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{fair:.1f}" y2="{fair:.1f}" '
               f'stroke="#333" stroke-dasharray="5,4"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{H - 8}" text-anchor="middle" font-size="11">'
               f'partition of {escape(stats["topic"])}</text>')
    out.append("</g>")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stats", nargs="+", help="generate.py --stats files, one panel each")
    ap.add_argument("--out", required=True, help="the SVG file to write")
    a = ap.parse_args()
    panels = []
    for path in a.stats:
        with open(path) as f:
            panels.append(json.load(f))
    width = W * len(panels)
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + 24}" '
        f'viewBox="0 0 {width} {H + 24}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{H + 24}" fill="white"/>',
    ]
    for i, s in enumerate(panels):
        svg += panel(s, i * W)
    hot = panels[0]["hot_ad"]
    svg.append(f'<text x="{width / 2}" y="{H + 16}" text-anchor="middle" font-size="12" fill="#333">'
               f'Share of the hot ad {escape(hot)}\'s clicks per partition; dashed: the fair share, '
               f'1/{panels[0]["partitions"]}</text>')
    svg.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

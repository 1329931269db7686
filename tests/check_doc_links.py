"""Every relative link in README.md and docs/*.md names a file or folder
that exists, and a `#anchor` on a Markdown page names one of its headings
(GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1,
-2 ... for repeats). Links in code blocks and code spans are not links."""

import glob
import os
import re
import sys

source = sys.argv[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text):
    """The page without fenced code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page):
    seen, out = {}, set()
    text = re.sub(r"^```.*?^```", "", open(page, encoding="utf-8").read(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def main():
    pages = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
    failures, checked = [], 0
    for page in pages:
        name = os.path.relpath(page, source)
        for target in LINK.findall(prose(open(page, encoding="utf-8").read())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            checked += 1
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(file):
                failures.append(f"{name}: link to {target}: no {os.path.relpath(file, source)}")
            elif anchor and file.endswith(".md") and anchor not in anchors(file):
                failures.append(f"{name}: link to {target}: {os.path.relpath(file, source)} "
                                f"has no heading #{anchor}")
    if checked < 20:
        failures.append(f"only {checked} relative links found: the pattern broke")
    if failures:
        sys.exit("\n".join(failures))
    print(f"{checked} relative links of the README and docs/ resolve")


main()

#!/usr/bin/env python3
"""Regenerate the binary / non-UTF-8 files of the bundled sample set.

Writes, under data/samples/:

* docs/bike-maintenance-log.pdf   4-page English PDF (real text layer)
* docs/空气净化器说明书.pdf          2-page Chinese PDF (needs a CJK TTF/TTC font)
* docs/garden-plan-2024.docx      DOCX with Heading 1 / Heading 2 paragraphs
* notes/家庭药箱.txt                Chinese plain text saved in GBK (not UTF-8)

All text comes from the constants below, so the output is reproducible.
The other sample files (Markdown, .txt, .rst, .html; ../sample-questions.jsonl) are
plain text and live in the repo as they are.

This is a developer tool, not a runtime dependency of Nook. It needs
fpdf2, python-docx and (for --verify) pypdf, e.g. in a throwaway venv:

    python3 -m venv /tmp/genvenv
    /tmp/genvenv/bin/pip install fpdf2 python-docx pypdf
    /tmp/genvenv/bin/python scripts/make_sample_docs.py --verify

The Chinese PDF needs a CJK font: Debian's fonts-wqy-microhei or
fonts-noto-cjk (or pass --cjk-font PATH). Without one it is skipped and the
committed copy is left as it is.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"

# A fixed timestamp so regenerated files carry the same metadata.
FIXED_DATE = _dt.datetime(2024, 11, 30, 12, 0, 0, tzinfo=_dt.timezone.utc)

CJK_FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
]

# ---------------------------------------------------------------------------
# English PDF: bike maintenance log. One list of blocks per page.
# Block kinds: ("h", text) heading, ("p", text) paragraph, ("li", text) bullet.
# Only Latin-1 characters (core Helvetica font).
# ---------------------------------------------------------------------------

BIKE_LOG_TITLE = "Bike Maintenance Log"

BIKE_LOG_PAGES = [
    [
        ("title", "Bike Maintenance Log"),
        ("p", "Owner: Xiaoyu Chen. Started September 2023, updated November 2024."),
        ("h", "Section 1: The bike"),
        ("li", "Green steel-frame touring bike, bought second-hand from a man called "
               "Gordon in Clifton on 2 September 2023 for £140."),
        ("li", "Frame size: 54 cm. Frame number: WR-88213-K, stamped under the bottom bracket."),
        ("li", "Wheels: 700c with 36 spokes. Gearing: 3 x 9 speed."),
        ("li", "Mudguards and a rear rack were already fitted by Gordon."),
        ("li", "Lights are rechargeable: charge both of them every Sunday evening."),
        ("li", "D-lock key number 4471. The spare key is in the kitchen drawer."),
        ("h", "How to use this log"),
        ("p", "Every job gets a date, the mileage and the cost. Mileage comes from the "
              "cycle computer on the handlebar, which was reset to zero on the day I "
              "bought the bike."),
    ],
    [
        ("h", "Section 2: Chain and drivetrain"),
        ("li", "14 April 2024, 1,862 miles: chain replaced with a new KMC X9 chain, "
               "shortened to 116 links. Cost £18.99."),
        ("li", "The old chain measured 0.75% wear on the chain checker, so it was well past due."),
        ("li", "Cassette (11-32) still fine, cleaned with citrus degreaser. The middle "
               "chainring is slightly worn: check it again in spring 2025."),
        ("li", "Lube: wet lube from October to March, dry lube from April to September."),
        ("li", "Re-lube the chain every 150 miles, or after any ride in heavy rain."),
        ("li", "2 August 2024: rear derailleur hanger bent after the bike fell over "
               "outside the library. Straightened at the shop for free."),
        ("h", "Gear indexing"),
        ("p", "If the chain rattles in the middle of the cassette, turn the barrel adjuster "
              "on the rear derailleur half a turn anticlockwise and test again."),
    ],
    [
        ("h", "Section 3: Tyres and brakes"),
        ("li", "Tyres: 700 x 35c puncture-resistant touring tyres."),
        ("li", "Pressure: 60 psi front, 70 psi rear. Check every two weeks with the track pump."),
        ("li", "Puncture, 3 February 2024: rear tyre, a shard of glass on Gloucester Road."),
        ("li", "Puncture, 19 July 2024: front tyre, a thorn from the hedge on the canal path."),
        ("li", "Spare inner tubes: 700 x 28-38c with Presta valves. Always carry one, "
               "plus two tyre levers and the mini pump."),
        ("li", "Brakes: V-brakes. Front pads replaced on 11 May 2024, £12 a pair."),
        ("li", "Rear pads have about 2 mm of rubber left: replace them before winter."),
    ],
    [
        ("h", "Section 4: Services and contacts"),
        ("li", "Annual service at Spoke & Sprocket, Cheltenham Road, on 28 June 2024: £65, "
               "including new gear cables and truing the rear wheel."),
        ("li", "Next annual service due in late June 2025."),
        ("li", "Mechanic: Nadia. She says the bottom bracket will need replacing "
               "within a year or two."),
        ("li", "Theft cover is part of the home contents insurance (see the home admin note)."),
        ("li", "Two spare inner tubes bought on 20 July 2024 for £11.98."),
        ("h", "Running total"),
        ("p", "Total spent on the bike in 2024 so far: £107.97 (chain, brake pads, "
              "service and inner tubes)."),
    ],
]

# ---------------------------------------------------------------------------
# Chinese PDF: air purifier manual (excerpt). One list of lines per page.
# Lines are kept short so that none of them wraps.
# ---------------------------------------------------------------------------

PURIFIER_TITLE = "清岚 QL-260 空气净化器 使用说明"

PURIFIER_PAGES = [
    [
        ("title", "清岚 QL-260 空气净化器 使用说明"),
        ("h", "一、产品参数"),
        ("p", "型号：QL-260"),
        ("p", "适用面积：18至30平方米"),
        ("p", "额定功率：45瓦"),
        ("p", "洁净空气量：每小时260立方米"),
        ("p", "睡眠模式噪音：26分贝"),
        ("h", "二、首次使用"),
        ("p", "1. 打开后盖，取出滤网，撕掉滤网外面的塑料包装。"),
        ("p", "2. 把滤网有标签的一面朝外装回去，关好后盖。"),
        ("p", "3. 接通电源，按电源键开机，默认进入自动模式。"),
        ("h", "三、指示灯说明"),
        ("p", "空气质量指示灯：蓝色表示优，黄色表示中，红色表示差。"),
        ("p", "连续按风速键可以在低、中、高三档之间切换。"),
        ("note", "（手写备注：2024年1月在家电店买的，打折后一百一十九英镑。）"),
    ],
    [
        ("h", "四、日常维护"),
        ("p", "1. 预过滤网每两周用吸尘器清洁一次。"),
        ("p", "2. 复合滤网大约每六个月更换一次，替换滤网型号为QL-F26。"),
        ("p", "3. 滤网指示灯变成红色并闪烁时，说明需要更换滤网。"),
        ("p", "4. 更换滤网后，长按定时键五秒，重置滤网寿命。"),
        ("h", "五、常见问题"),
        ("p", "机器发出异味：检查滤网是否受潮，受潮后请立即更换。"),
        ("p", "风量变小：预过滤网可能积灰太多，请先清洁预过滤网。"),
        ("p", "无法开机：确认电源插头插好，后盖完全关紧。"),
        ("h", "六、保修"),
        ("p", "整机保修两年，滤网属于耗材，不在保修范围内。"),
        ("note", "（手写备注：2024年7月10日第一次换滤网，下次大约在2025年1月。）"),
    ],
]

# ---------------------------------------------------------------------------
# DOCX: garden plan. ("h1"|"h2"|"p"|"li", text)
# ---------------------------------------------------------------------------

GARDEN_PLAN = [
    ("h1", "Garden Plan 2024"),
    ("p", "Allotment plot 17B at the Horfield Road allotments, 5 m by 10 m, split into "
          "three raised beds and a strip for fruit. The annual rent is £48, paid to the "
          "allotment secretary, Mr Baxter, on 1 March."),
    ("h2", "Bed 1: Tomatoes and basil"),
    ("p", "Two varieties this year: 'Sungold' for eating straight off the plant and "
          "'Gardener's Delight' for sauce. Seeds sown indoors on the kitchen windowsill "
          "on 10 March. Six plants, planted out in the last week of May, 60 cm apart."),
    ("p", "Basil goes between the tomatoes. Pinch out the side shoots on the tomatoes "
          "every Saturday."),
    ("h2", "Bed 2: Beans and peas"),
    ("p", "Climbing French beans sown directly on 1 May, up a wigwam of eight hazel "
          "poles. Sugar snap peas along the north edge, sown in two batches three "
          "weeks apart so they do not all come at once."),
    ("h2", "Bed 3: Roots"),
    ("p", "Carrots sown thinly in April and covered with fine mesh against carrot fly. "
          "Beetroot in between. Last year the carrots were eaten by slugs, so this year "
          "there is a ring of sheep wool pellets around the bed."),
    ("h1", "Watering and jobs"),
    ("h2", "Watering rota"),
    ("p", "Shared with Ahmed on plot 17A. I water on Mondays, Thursdays and Saturdays; "
          "Ahmed does the other days. The water troughs are switched off from "
          "November to March."),
    ("h2", "Budget"),
    ("li", "Seeds: £31.60"),
    ("li", "Compost and manure: £42.00"),
    ("li", "Mesh, poles and string: £19.25"),
    ("li", "Total for 2024: £140.85, including the £48 rent."),
    ("h1", "Lessons from 2023"),
    ("p", "Do not plant courgettes again: three plants produced far more than two "
          "people can eat, and the neighbours stopped answering the door. One plant "
          "is plenty."),
    ("p", "Label every row with a wooden stick and a pencil, not a marker pen, which "
          "fades in the sun by July."),
]

# ---------------------------------------------------------------------------
# GBK text file: home medicine cabinet (Chinese), LF line endings.
# ---------------------------------------------------------------------------

MEDICINE_CABINET_TXT = """家庭药箱清单
整理日期：2024年8月25日

药箱放在卫生间洗手台下面的白色塑料箱里，盖子是蓝色的。

一、常用药
1. 布洛芬缓释胶囊，一盒二十粒，有效期到2026年3月。头疼、牙疼、发烧时吃，一次一粒，一天不超过两次。
2. 对乙酰氨基酚片，有效期到2025年11月，发烧时和布洛芬二选一，不要同时吃。
3. 氯雷他定片（抗过敏），春天花粉季用，每天一片，睡前吃。
4. 蒙脱石散，拉肚子时用，一次一袋，用五十毫升温水冲开。
5. 板蓝根冲剂，妈妈从长沙寄来的，还剩七袋。
6. 藿香正气水，夏天中暑或者肠胃不舒服的时候喝，一次一支，还剩四支。

二、外用
1. 创可贴一盒，还剩十六片。
2. 碘伏棉签，有效期到2025年6月。
3. 双氯芬酸软膏，崴脚以后用的，一天涂三次，不要涂在破皮的地方。
4. 弹力绷带两卷，一卷宽的，一卷窄的。

三、工具
电子体温计一支，九月刚换过电池，型号是LR41。小剪刀、镊子各一把，放在药箱最上层的小格子里。
另外有一盒医用口罩，还剩二十三个，冬天流感季坐公交的时候戴。

四、提醒
每年八月底检查一遍过期药。过期的药不要扔进垃圾桶，拿到药店统一回收。
每次用完药，在药箱盖子里面贴的小本子上记一笔，这样就知道哪些药快用完了，该去补货。
急救电话：紧急情况拨999，不紧急但需要看病拨111。
"""


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def _new_pdf(title: str):
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=False)
    pdf.set_title(title)
    pdf.set_author("Xiaoyu Chen (fictional)")
    pdf.set_creator("Nook scripts/make_sample_docs.py")
    pdf.set_creation_date(FIXED_DATE)
    return pdf


def _render_pages(pdf, pages, family: str, sizes: dict[str, float], bold: bool = False) -> None:
    width = pdf.w - pdf.l_margin - pdf.r_margin
    head_style = "B" if bold else ""
    for blocks in pages:
        pdf.add_page()
        for kind, text in blocks:
            if kind == "title":
                pdf.set_font(family, style=head_style, size=sizes["title"])
                pdf.multi_cell(width, sizes["title"] * 0.6, text, align="L", new_x="LMARGIN", new_y="NEXT")
                pdf.ln(4)
            elif kind == "h":
                pdf.ln(3)
                pdf.set_font(family, style=head_style, size=sizes["h"])
                pdf.multi_cell(width, sizes["h"] * 0.55, text, align="L", new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1.5)
            elif kind == "li":
                pdf.set_font(family, size=sizes["p"])
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(width - 4, sizes["p"] * 0.5, "- " + text,
                               align="L", new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1)
            else:  # "p" / "note"
                pdf.set_font(family, size=sizes["p"])
                pdf.multi_cell(width, sizes["p"] * 0.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1)
        # Footer with the page number on every page.
        pdf.set_y(pdf.h - 15)
        pdf.set_font(family, size=8)
        pdf.cell(width, 5, f"{pdf.page_no()} / {len(pages)}", align="C")


def build_bike_pdf(out: Path) -> None:
    pdf = _new_pdf(BIKE_LOG_TITLE)
    _render_pages(pdf, BIKE_LOG_PAGES, "Helvetica", {"title": 20, "h": 14, "p": 11}, bold=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))


def find_cjk_font(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for cand in CJK_FONT_CANDIDATES:
        if Path(cand).is_file():
            return cand
    return None


def build_purifier_pdf(out: Path, font_path: str) -> None:
    pdf = _new_pdf(PURIFIER_TITLE)
    pdf.add_font("cjk", "", font_path)
    _render_pages(pdf, PURIFIER_PAGES, "cjk", {"title": 18, "h": 14, "p": 11})
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))


def build_garden_docx(out: Path) -> None:
    from docx import Document

    doc = Document()
    props = doc.core_properties
    props.title = "Garden Plan 2024"
    props.author = "Xiaoyu Chen (fictional)"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_modified_by = "Nook scripts/make_sample_docs.py"
    props.revision = 1
    for kind, text in GARDEN_PLAN:
        if kind == "h1":
            doc.add_heading(text, level=1)
        elif kind == "h2":
            doc.add_heading(text, level=2)
        elif kind == "li":
            doc.add_paragraph(text, style="List Bullet")
        else:
            doc.add_paragraph(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    doc.save(buf)
    out.write_bytes(_normalise_zip(buf.getvalue()))


def _normalise_zip(data: bytes) -> bytes:
    """Re-pack a zip with fixed entry timestamps so regenerating gives identical bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    stamp = FIXED_DATE.timetuple()[:6]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(item.filename))
    return out.getvalue()


def write_gbk_note(out: Path) -> None:
    data = MEDICINE_CABINET_TXT.encode("gbk")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _strip_ws(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _expected_page_text(blocks) -> list[str]:
    return [text for _kind, text in blocks]


def verify(paths: dict[str, Path]) -> list[str]:
    """Return a list of problems (empty when everything checks out)."""
    from pypdf import PdfReader
    from docx import Document

    problems: list[str] = []

    def check_pdf(path: Path, pages, strict_spaces: bool) -> None:
        reader = PdfReader(str(path))
        if len(reader.pages) != len(pages):
            problems.append(f"{path.name}: {len(reader.pages)} pages, expected {len(pages)}")
            return
        for i, (page, blocks) in enumerate(zip(reader.pages, pages), start=1):
            got = page.extract_text() or ""
            hay = _norm(got) if strict_spaces else _strip_ws(got)
            for text in _expected_page_text(blocks):
                needle = _norm(text) if strict_spaces else _strip_ws(text)
                if needle not in hay:
                    problems.append(f"{path.name} p{i}: missing {text[:50]!r}")
            # Facts must be unique to their page.
            for j, other in enumerate(pages, start=1):
                if j == i:
                    continue
                for text in _expected_page_text(other):
                    # Longer lines are facts; short ones (e.g. a bare heading) may repeat.
                    if len(text) > 12 and _strip_ws(text) in _strip_ws(got):
                        problems.append(f"{path.name} p{i}: also contains page {j} text {text[:40]!r}")

    check_pdf(paths["bike"], BIKE_LOG_PAGES, strict_spaces=True)
    if paths["purifier"].exists():
        check_pdf(paths["purifier"], PURIFIER_PAGES, strict_spaces=True)
    else:
        problems.append(f"{paths['purifier'].name}: not present")

    doc = Document(str(paths["garden"]))
    got = [(p.style.name, p.text) for p in doc.paragraphs]
    want_style = {"h1": "Heading 1", "h2": "Heading 2", "p": "Normal", "li": "List Bullet"}
    want = [(want_style[k], t) for k, t in GARDEN_PLAN]
    if got != want:
        problems.append(f"{paths['garden'].name}: paragraphs/styles differ from GARDEN_PLAN")

    raw = paths["gbk"].read_bytes()
    try:
        raw.decode("utf-8")
        problems.append(f"{paths['gbk'].name}: decodes as UTF-8, expected GBK only")
    except UnicodeDecodeError:
        pass
    if raw.decode("gbk") != MEDICINE_CABINET_TXT:
        problems.append(f"{paths['gbk'].name}: GBK content differs")

    return problems


def verify_questions(samples: Path) -> list[str]:
    """Check sample-questions.jsonl: sources exist and answers occur in the extracted text."""
    from pypdf import PdfReader
    from docx import Document
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag, attrs):
            if tag in ("script", "style"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("script", "style") and self.skip:
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    problems: list[str] = []
    qfile = samples.parent / "sample-questions.jsonl"
    if not qfile.exists():
        return [f"{qfile} missing"]
    for n, line in enumerate(qfile.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        q = json.loads(line)
        src = samples / q["source"]
        if not src.exists():
            problems.append(f"q{n}: source {q['source']} missing")
            continue
        suffix = src.suffix.lower()
        if suffix == ".pdf":
            reader = PdfReader(str(src))
            if q["page"] is None:
                problems.append(f"q{n}: PDF source without page")
                continue
            text = reader.pages[q["page"] - 1].extract_text() or ""
        elif suffix == ".docx":
            text = "\n".join(p.text for p in Document(str(src)).paragraphs)
        elif suffix in (".html", ".htm"):
            parser = _Text()
            parser.feed(src.read_text("utf-8"))
            text = " ".join(parser.parts)
        else:
            raw = src.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("gbk")
        if _norm(q["answer"]) not in _norm(text):
            problems.append(f"q{n}: answer {q['answer'][:40]!r} not found in {q['source']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=SAMPLES, help="samples folder (default: data/samples)")
    ap.add_argument("--cjk-font", help="path to a CJK .ttf/.ttc/.otf font for the Chinese PDF")
    ap.add_argument("--verify", action="store_true", help="check the generated files afterwards")
    ap.add_argument("--verify-only", action="store_true", help="do not regenerate, only check")
    args = ap.parse_args(argv)

    paths = {
        "bike": args.out / "docs" / "bike-maintenance-log.pdf",
        "purifier": args.out / "docs" / "空气净化器说明书.pdf",
        "garden": args.out / "docs" / "garden-plan-2024.docx",
        "gbk": args.out / "notes" / "家庭药箱.txt",
    }

    if not args.verify_only:
        build_bike_pdf(paths["bike"])
        print(f"wrote {paths['bike']}")
        font = find_cjk_font(args.cjk_font)
        if font:
            build_purifier_pdf(paths["purifier"], font)
            print(f"wrote {paths['purifier']} (font {font})")
        else:
            print("no CJK font found: skipped the Chinese PDF "
                  "(apt-get install fonts-wqy-microhei, or pass --cjk-font)", file=sys.stderr)
        build_garden_docx(paths["garden"])
        print(f"wrote {paths['garden']}")
        write_gbk_note(paths["gbk"])
        print(f"wrote {paths['gbk']} (GBK)")

    if args.verify or args.verify_only:
        problems = verify(paths) + verify_questions(args.out)
        for p in problems:
            print("PROBLEM:", p, file=sys.stderr)
        if problems:
            return 1
        print("verify: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

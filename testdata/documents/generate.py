#!/usr/bin/env python3
"""Regenerates the document fixtures of `crates/documents/tests/documents.rs` and their README.

The source text of every fixture is below; the PDF and DOCX files are rendered from it, so a
change to a job description is made here and the binaries regenerated, never edited by hand.

    python3 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install 'fpdf2==2.8.9' 'python-docx==1.2.0'
    /tmp/fixtures-venv/bin/python testdata/documents/generate.py

The embedded-font PDF needs DejaVu Sans (Debian `fonts-dejavu-core`). Dates inside the files are
fixed, so regenerating with these package versions gives byte-identical files (other versions may
change bytes, and so the content hashes, but not the text).

Every bullet of a PDF fixture fits on one line (the script checks), so a task or skill extracted
from a PDF is one line of text, as it is in the other formats.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

from docx import Document
from docx.shared import Pt
from fpdf import FPDF

HERE = Path(__file__).resolve().parent
FIXED_DATE = dt.datetime(2026, 1, 15, 9, 0, 0, tzinfo=dt.timezone.utc)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
DEJAVU_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

# A document is a title, an optional subtitle line, and sections. A section is a heading and
# blocks; a block is ("p", text) for a paragraph or ("ul", [items]) for a bulleted list.
# `tasks` and `skills` name the sections whose bullets are the role's tasks and skills: the
# README lists them verbatim for the tests that check what the offline model finds.

CLAIMS_ADJUSTER = {
    "file": "claims_adjuster_jd.pdf",
    "format": "PDF (TrueType font embedded and subset, ToUnicode map: how Word and LibreOffice export)",
    "title": "Claims Adjuster",
    "subtitle": "Northfield Mutual Insurance | Property & Casualty Claims | Hartford, CT (hybrid)",
    "sections": [
        ("Summary", [
            ("p", "The Claims Adjuster investigates, evaluates and settles property and auto claims "
                  "filed by Northfield Mutual policyholders and third parties. You own each claim from "
                  "first notice of loss to closure, decide coverage within your authority, and make sure "
                  "customers are paid fairly and promptly while the company is protected from fraud and "
                  "leakage. The role works closely with underwriting, special investigations, legal "
                  "counsel and preferred repair vendors."),
        ]),
        ("Key Responsibilities", [
            ("ul", [
                "Review first notice of loss reports and contact claimants within one business day",
                "Verify policy coverage, limits, deductibles and exclusions for each claim",
                "Investigate claims by interviewing claimants, witnesses and police officers",
                "Inspect damaged vehicles and properties and photograph the damage",
                "Estimate repair and replacement costs using Xactimate and CCC One",
                "Set and adjust claim reserves as new information becomes available",
                "Negotiate settlements with claimants, attorneys and repair shops",
                "Refer suspicious claims to the Special Investigations Unit",
                "Document every claim decision in the claims management system",
                "Identify subrogation opportunities and hand them to the recovery team",
                "Explain coverage decisions to policyholders in plain language",
            ]),
        ]),
        ("Required Skills", [
            ("ul", [
                "Knowledge of property and casualty insurance policies",
                "Damage estimation with Xactimate or CCC One",
                "Negotiation and conflict resolution",
                "Investigative interviewing",
                "Fraud detection",
                "Clear written communication",
                "Time management across a caseload of 120+ open claims",
                "Empathy with customers after a loss",
            ]),
        ]),
        ("Qualifications", [
            ("ul", [
                "Bachelor's degree in business, finance or a related field, or equivalent experience",
                "Active state adjuster license, or the ability to obtain one within 90 days",
                "Two or more years of experience handling auto or property claims",
                "A valid driver's license and a clean driving record",
            ]),
        ]),
        ("Working Conditions", [
            ("p", "About half of the week is spent in the field visiting loss sites, body shops and "
                  "customers' homes; the rest is remote or at the Hartford office. After storms and "
                  "other catastrophe events, adjusters may be deployed to affected regions for up to "
                  "three weeks and work extended hours, including weekends."),
        ]),
        ("About Northfield Mutual", [
            ("p", "Northfield Mutual has insured homes, cars and small businesses in New England since "
                  "1921. We pay more than 90,000 claims a year and measure ourselves by how quickly and "
                  "fairly we help customers recover. We offer a pension plan, tuition reimbursement, a "
                  "company vehicle for field adjusters and paid time off for volunteering."),
        ]),
    ],
    "tasks": "Key Responsibilities",
    "skills": "Required Skills",
}

REGISTERED_NURSE = {
    "file": "registered_nurse_jd.docx",
    "format": "DOCX (python-docx: headings, bulleted list paragraphs, a table)",
    "title": "Registered Nurse, Medical-Surgical Unit",
    "subtitle": "Riverside General Hospital",
    "table": [
        ("Department", "Medical-Surgical Unit, 4 West"),
        ("Reports to", "Nurse Manager, Medical-Surgical Services"),
        ("Schedule", "Three 12-hour shifts per week, rotating weekends"),
        ("Employment type", "Full-time, non-exempt"),
    ],
    "sections": [
        ("Position Summary", [
            ("p", "The Registered Nurse provides safe, evidence-based care to adult patients recovering "
                  "from surgery or admitted with acute medical conditions on a 32-bed unit. Working with "
                  "physicians, pharmacists, therapists and nursing assistants, the nurse plans and "
                  "delivers care for a group of four to six patients per shift, teaches patients and "
                  "families, and keeps an accurate record of the care given. The unit precepts nursing "
                  "students from two local colleges, and experienced nurses are encouraged to serve as "
                  "preceptors and charge nurses."),
        ]),
        ("Responsibilities", [
            ("ul", [
                "Assess patients' physical and psychosocial condition at the start of each shift",
                "Administer medications and intravenous therapies according to physician orders",
                "Monitor vital signs and recognise early signs of patient deterioration",
                "Develop and update individualized nursing care plans",
                "Perform wound care and dressing changes",
                "Educate patients and families about diagnoses, medications and discharge instructions",
                "Document assessments, interventions and outcomes in the electronic health record",
                "Coordinate care with physicians, case managers and allied health professionals",
                "Respond to rapid response and code blue events",
                "Supervise and delegate tasks to licensed practical nurses and nursing assistants",
            ]),
        ]),
        ("Skills and Competencies", [
            ("ul", [
                "Clinical assessment",
                "Medication administration and dosage calculation",
                "IV insertion and infusion pump management",
                "Electronic health record documentation (Epic)",
                "Patient education",
                "Critical thinking under pressure",
                "Infection prevention and control",
                "Teamwork and communication",
            ]),
        ]),
        ("Qualifications", [
            ("ul", [
                "Associate or Bachelor of Science in Nursing (BSN preferred)",
                "Current Registered Nurse license in the state of practice",
                "Basic Life Support (BLS) certification; Advanced Cardiac Life Support (ACLS) within six months",
                "One year of acute care experience preferred; new graduates are welcome to apply",
            ]),
        ]),
        ("About the Unit", [
            ("p", "4 West cares for general surgery, orthopaedic and medical patients, most of them "
                  "older adults with several chronic conditions. The unit uses a shared-governance "
                  "model: staff nurses sit on the practice, quality and scheduling councils and help "
                  "choose the unit's improvement projects, such as the falls-prevention rounding that "
                  "halved patient falls last year. Nurses receive twelve paid education hours a year and "
                  "tuition support toward a BSN or a specialty certification such as CMSRN."),
        ]),
        ("Physical Demands", [
            ("p", "Stands and walks for most of a 12-hour shift, lifts and repositions patients with "
                  "mechanical aids and colleagues, and is exposed to bloodborne pathogens and infectious "
                  "diseases, with protective equipment provided."),
        ]),
    ],
    "tasks": "Responsibilities",
    "skills": "Skills and Competencies",
}

CUSTOMER_SUCCESS_MANAGER = {
    "file": "customer_success_manager_jd.md",
    "format": "Markdown (ATX headings, `-` bullets, bold, a link)",
    "title": "Customer Success Manager",
    "subtitle": "Brightlane Software | Remote (US time zones) | Customer Success",
    "sections": [
        ("Summary", [
            ("p", "Brightlane makes scheduling and workforce software for multi-site retailers. As a "
                  "**Customer Success Manager** you own the relationship with a portfolio of 25 to 40 "
                  "mid-market accounts after they sign: you make sure they get value from the product, "
                  "renew, and grow. You are the customer's advocate inside Brightlane and Brightlane's "
                  "voice in the customer's leadership meetings."),
        ]),
        ("What you will do", [
            ("ul", [
                "Onboard new customers and run kickoff meetings with their project teams",
                "Build success plans with measurable goals for each account",
                "Monitor product usage and account health scores in Gainsight",
                "Run quarterly business reviews with customer executives",
                "Identify expansion opportunities and hand qualified leads to account executives",
                "Manage renewals and forecast renewal risk for your portfolio",
                "Escalate product issues to support and engineering and follow them to resolution",
                "Gather customer feedback and share it with the product team",
                "Create training materials and run webinars for customer administrators",
            ]),
        ]),
        ("What you bring", [
            ("ul", [
                "Relationship management with senior stakeholders",
                "Data analysis with spreadsheets and BI dashboards",
                "Presentation skills",
                "Project management",
                "Knowledge of SaaS subscription metrics such as churn, net revenue retention and ARR",
                "Experience with a CRM such as Salesforce or HubSpot",
                "Problem solving",
                "Written and verbal communication",
            ]),
        ]),
        ("Requirements", [
            ("ul", [
                "Three or more years in customer success, account management or consulting",
                "Experience managing a book of business worth at least $2M in annual recurring revenue",
                "Comfort travelling to customer sites up to 20% of the time",
            ]),
        ]),
        ("How we measure success", [
            ("p", "Your portfolio's gross revenue retention, net revenue retention and customer health "
                  "trend are reviewed every month with your manager. We also look at time to first value "
                  "for new customers, the adoption of the features each customer bought, and what your "
                  "customers say about working with you in our twice-yearly survey. Quotas are never the "
                  "only measure: a customer who churns after a difficult but honest conversation is "
                  "better than one who renews with the wrong expectations."),
        ]),
        ("Your first 90 days", [
            ("p", "In your first month you will shadow two senior CSMs, complete product certification "
                  "and meet the support, solutions engineering and product teams. In the second month "
                  "you take over a starter portfolio of ten accounts with a mentor. By the end of the "
                  "third month you own your full portfolio, have met every customer's executive sponsor "
                  "and have written a success plan for each account."),
        ]),
        ("Why Brightlane", [
            ("p", "We are a 300-person company backed by long-term investors, with customers in 14 "
                  "countries. Everyone gets equity, a home-office budget and four weeks of paid time off. "
                  "Read more about how we work at [brightlane.example/careers](https://brightlane.example/careers)."),
        ]),
    ],
    "tasks": "What you will do",
    "skills": "What you bring",
}

SOFTWARE_ENGINEER = {
    "file": "software_engineer_jd.txt",
    "format": "TXT (UTF-8, upper-case headings, `-` bullets, CRLF line endings)",
    "title": "Software Engineer, Payments Platform",
    "subtitle": "Quayside Financial Technologies - Engineering - London or remote (UK)",
    "sections": [
        ("About the role", [
            ("p", "The Payments Platform team builds the services that move money for Quayside's two "
                  "million customers: card authorisations, bank transfers, ledgers and reconciliation. "
                  "As a Software Engineer on the team you design, build and run backend services that "
                  "must be correct, observable and available around the clock. You will join a team of "
                  "seven engineers, a product manager and a designer, and you will share on-call duty."),
        ]),
        ("Responsibilities", [
            ("ul", [
                "Design, build and maintain backend services in Rust and Go",
                "Write unit, integration and property-based tests for new code",
                "Review pull requests from other engineers",
                "Design REST and gRPC APIs for internal and partner teams",
                "Operate services in production and take part in the on-call rotation",
                "Investigate incidents and write blameless postmortems",
                "Improve the performance and reliability of the ledger service",
                "Automate deployments with CI/CD pipelines",
                "Mentor junior engineers",
            ]),
        ]),
        ("Skills", [
            ("ul", [
                "Rust or Go programming",
                "Distributed systems design",
                "SQL and PostgreSQL",
                "Kubernetes and Docker",
                "Observability with Prometheus and OpenTelemetry",
                "Automated testing",
                "Git and code review",
                "Clear technical writing",
            ]),
        ]),
        ("How we work", [
            ("p", "We ship small changes many times a day behind feature flags, and every change is "
                  "reviewed by at least one other engineer. Services are written in Rust where "
                  "correctness and latency matter most, and in Go for tooling and integrations; they run "
                  "on Kubernetes in two cloud regions and store their state in PostgreSQL. We write "
                  "design documents for anything that touches money movement, and we review them "
                  "together before the first line of code."),
            ("p", "On-call is shared by the whole team, one week in seven, with a paid allowance and a "
                  "day off after a busy night. We keep alerts few and actionable, and every incident "
                  "gets a postmortem that looks for causes in systems, not people."),
        ]),
        ("Nice to have", [
            ("ul", [
                "Experience with payment schemes such as Visa, Mastercard or Faster Payments",
                "Knowledge of double-entry bookkeeping",
            ]),
        ]),
        ("What we offer", [
            ("p", "A salary between 75,000 and 95,000 GBP depending on experience, a 10% pension "
                  "contribution, private health insurance, 30 days of holiday and a yearly learning budget "
                  "of 2,000 GBP. We hire without regard to background and adjust our interviews for "
                  "anyone who asks."),
        ]),
    ],
    "tasks": "Responsibilities",
    "skills": "Skills",
}

CLAIMS_PROCESS_MAP = {
    "file": "claims_handling_process_map.pdf",
    "format": "PDF (standard Helvetica, WinAnsi encoding, two pages)",
    "title": "Claims Handling Process Map",
    "subtitle": "Northfield Mutual Insurance | Personal Auto and Homeowners | Version 3.2",
    "sections": [
        ("Purpose", [
            ("p", "This process map describes how a personal auto or homeowners claim moves from the "
                  "first notice of loss to closure. It names the owner of each step, the systems used, "
                  "and the service level the claims organisation commits to. Claims Adjusters, Claims "
                  "Assistants and Team Leads use it for training and quality reviews."),
        ]),
        ("Step 1 - First notice of loss (owner: Claims Assistant, SLA: same day)", [
            ("ul", [
                "Record the loss report from the phone line, web form or agent portal",
                "Create the claim file in Guidewire ClaimCenter",
                "Send the acknowledgement letter to the policyholder",
            ]),
        ]),
        ("Step 2 - Coverage verification (owner: Claims Adjuster, SLA: 1 business day)", [
            ("ul", [
                "Confirm the policy was in force on the date of loss",
                "Check limits, deductibles and exclusions against the reported loss",
                "Issue a reservation of rights letter when coverage is in question",
            ]),
        ]),
        ("Step 3 - Triage and assignment (owner: Team Lead, SLA: 1 business day)", [
            ("ul", [
                "Score claim complexity and fraud indicators",
                "Assign the claim to a desk adjuster or a field adjuster",
                "Fast-track glass and towing claims under 1,500 USD",
            ]),
        ]),
        ("Step 4 - Investigation (owner: Claims Adjuster, SLA: 10 business days)", [
            ("ul", [
                "Interview the claimant, witnesses and other drivers",
                "Obtain police reports, photographs and repair estimates",
                "Refer red-flag claims to the Special Investigations Unit",
            ]),
        ]),
        ("Step 5 - Evaluation and reserving (owner: Claims Adjuster, SLA: 15 business days)", [
            ("ul", [
                "Estimate the damage with Xactimate or CCC One",
                "Determine liability and apply comparative negligence rules",
                "Set the indemnity and expense reserves",
            ]),
        ]),
        ("Step 6 - Negotiation and settlement (owner: Claims Adjuster, SLA: 30 days)", [
            ("ul", [
                "Present the settlement offer to the claimant or their attorney",
                "Obtain Team Lead approval for payments above the adjuster's authority",
                "Record the signed release in the claim file",
            ]),
        ]),
        ("Step 7 - Payment (owner: Claims Assistant, SLA: 2 business days)", [
            ("ul", [
                "Issue payment to the claimant, repair shop or lienholder",
                "Check payees against the sanctions list before release",
            ]),
        ]),
        ("Step 8 - Subrogation and recovery (owner: Recovery Specialist, SLA: 60 days)", [
            ("ul", [
                "Identify responsible third parties and their insurers",
                "Send demand letters and track recoveries",
            ]),
        ]),
        ("Step 9 - Closure and quality review (owner: Team Lead, SLA: 5 business days)", [
            ("ul", [
                "Close the claim file once every payment has cleared",
                "Audit a sample of closed claims against this process map",
            ]),
        ]),
        ("Systems", [
            ("p", "Guidewire ClaimCenter (claim files, reserves, payments), Xactimate and CCC One "
                  "(estimates), the ISO ClaimSearch database (prior-loss checks) and DocuSign "
                  "(releases)."),
        ]),
    ],
    "tasks": "Step",
    "skills": None,
}

GOOD = [CLAIMS_ADJUSTER, REGISTERED_NURSE, CUSTOMER_SUCCESS_MANAGER, SOFTWARE_ENGINEER, CLAIMS_PROCESS_MAP]


# ---------------------------------------------------------------------------------------------
# Renderers


def words(doc: dict) -> int:
    n = len(doc["title"].split()) + len(doc.get("subtitle", "").split())
    for heading, blocks in doc["sections"]:
        n += len(heading.split())
        for kind, body in blocks:
            items = [body] if kind == "p" else body
            n += sum(len(i.split()) for i in items)
    for k, v in doc.get("table", []):
        n += len(k.split()) + len(v.split())
    return n


class Pdf(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.body_font, size=8)
        self.cell(0, 5, f"Page {self.page_no()}", align="C")


def render_pdf(doc: dict, path: Path, embed_font: bool) -> None:
    pdf = Pdf(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(doc["title"])
    pdf.set_author("Etter pipeline test fixtures")
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(True, margin=18)
    if embed_font:
        pdf.add_font("DejaVu", "", str(DEJAVU))
        pdf.add_font("DejaVu", "B", str(DEJAVU_BOLD))
        pdf.body_font, bullet = "DejaVu", "\u2022"
    else:
        pdf.body_font, bullet = "Helvetica", "-"
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font(pdf.body_font, "B", 16)
    pdf.multi_cell(width, 8, doc["title"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.body_font, "", 10)
    pdf.multi_cell(width, 6, doc["subtitle"], new_x="LMARGIN", new_y="NEXT")
    for heading, blocks in doc["sections"]:
        pdf.ln(4)
        pdf.set_font(pdf.body_font, "B", 12)
        pdf.multi_cell(width, 7, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(pdf.body_font, "", 10)
        for kind, body in blocks:
            if kind == "p":
                pdf.multi_cell(width, 5, body, new_x="LMARGIN", new_y="NEXT")
                continue
            for item in body:
                line = f"{bullet} {item}"
                if pdf.get_string_width(line) > width - 6:
                    raise SystemExit(f"{doc['file']}: bullet wraps in the PDF, shorten it: {item!r}")
                pdf.set_x(pdf.l_margin + 4)
                pdf.cell(width - 4, 5.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def render_docx(doc: dict, path: Path) -> None:
    d = Document()
    d.core_properties.created = FIXED_DATE.replace(tzinfo=None)
    d.core_properties.modified = FIXED_DATE.replace(tzinfo=None)
    d.core_properties.author = "Etter pipeline test fixtures"
    d.core_properties.title = doc["title"]
    d.styles["Normal"].font.size = Pt(11)
    d.add_heading(doc["title"], level=0)
    d.add_paragraph(doc["subtitle"])
    if doc.get("table"):
        table = d.add_table(rows=0, cols=2)
        table.style = "Table Grid"
        for key, value in doc["table"]:
            cells = table.add_row().cells
            cells[0].text = key
            cells[1].text = value
    for heading, blocks in doc["sections"]:
        d.add_heading(heading, level=1)
        for kind, body in blocks:
            if kind == "p":
                d.add_paragraph(body)
            else:
                for item in body:
                    d.add_paragraph(item, style="List Bullet")
    buf = io.BytesIO()
    d.save(buf)
    path.write_bytes(fix_zip_dates(buf.getvalue()))


def fix_zip_dates(data: bytes) -> bytes:
    """Rewrites a zip with fixed entry timestamps, so regenerating does not churn the bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def render_markdown(doc: dict) -> str:
    lines = [f"# {doc['title']}", "", f"_{doc['subtitle']}_", ""]
    for heading, blocks in doc["sections"]:
        lines += [f"## {heading}", ""]
        for kind, body in blocks:
            lines += [body, ""] if kind == "p" else [*(f"- {i}" for i in body), ""]
    return "\n".join(lines)


def render_text(doc: dict) -> str:
    lines = [doc["title"].upper(), doc["subtitle"], ""]
    for heading, blocks in doc["sections"]:
        lines += [heading.upper(), ""]
        for kind, body in blocks:
            lines += [body, ""] if kind == "p" else [*(f"  - {i}" for i in body), ""]
    return "\r\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Bad documents: each must be refused with a clear, non-retryable error.

CORRUPT_PDF = (
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n3 0 obj\n<< /Type /Page /Par"
    b"\x00\x17\x9c\xff garbage where the rest of the file was cut off during upload \xfe\xfa"
)


def no_document_xml_docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in [
            ("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'),
            ("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>'),
            ("word/styles.xml", '<?xml version="1.0"?><w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"/>'),
        ]:
            z.writestr(zipfile.ZipInfo(name, date_time=FIXED_DATE.timetuple()[:6]), body)
    return buf.getvalue()


def scanned_pdf(path: Path) -> None:
    """A PDF with pages but no text: what a scanner produces before OCR."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.add_page()
    for i in range(12):
        pdf.rect(20, 20 + i * 12, 170 - (i % 4) * 25, 6, style="F")
    pdf.output(str(path))


BAD = [
    ("corrupt.pdf", "a PDF header followed by a cut-off body", "not recoverable: the PDF is damaged"),
    ("empty.txt", "0 bytes", "not recoverable: the document is empty"),
    ("latin1.txt", "Windows-1252 text, not UTF-8", "not recoverable: not UTF-8"),
    ("no_document_xml.docx", "a zip with Word parts but no word/document.xml", "not recoverable: not a Word document"),
    ("scanned.pdf", "a valid PDF whose page has only drawn rectangles, no text", "not recoverable: no text (scanned)"),
]


# ---------------------------------------------------------------------------------------------


def section(doc: dict, name: str) -> list[str]:
    return [i for heading, blocks in doc["sections"] if heading == name for kind, b in blocks if kind == "ul" for i in b]


def readme() -> str:
    out = [
        "# Document fixtures",
        "",
        "Generated by `generate.py` in this folder (the source text of every fixture is there; do not",
        "edit the binaries by hand). Used by `crates/documents/tests/documents.rs` (fetch and extraction) and by",
        "the LLM tests, which check the tasks and skills the offline model derives from the extracted",
        "text. Every item below appears verbatim, on one line of its own, in the extracted text of its",
        "fixture (in the PDFs too: no bullet wraps). In the extracted text a list item starts with",
        "`• ` in `claims_adjuster_jd.pdf` and with `- ` everywhere else (the DOCX extractor marks Word",
        "list paragraphs `- `); the PDF extractor leaves a blank line between list items, the others",
        "do not.",
        "",
        "## Job descriptions and process map",
        "",
        "| file | format | words |",
        "|---|---|---|",
    ]
    for doc in GOOD:
        out.append(f"| `{doc['file']}` | {doc['format']} | {words(doc)} |")
    for doc in GOOD:
        out += ["", f"### `{doc['file']}` — {doc['title']}", ""]
        if doc["file"] == CLAIMS_PROCESS_MAP["file"]:
            out += ["Tasks (the activities of each step, under headings `Step N - …`):", ""]
            for heading, blocks in doc["sections"]:
                if heading.startswith("Step"):
                    out.append(f"- {heading}")
                    out += [f"  - {i}" for kind, b in blocks if kind == "ul" for i in b]
            continue
        out += [f"Tasks (section `{doc['tasks']}`):", ""]
        out += [f"- {i}" for i in section(doc, doc["tasks"])]
        out += ["", f"Skills (section `{doc['skills']}`):", ""]
        out += [f"- {i}" for i in section(doc, doc["skills"])]
    out += ["", "## Bad documents", "", "| file | what it is | expected |", "|---|---|---|"]
    out += [f"| `{f}` | {what} | {expected} |" for f, what, expected in BAD]
    out += [
        "",
        "Other bad cases (missing file, oversize, traversal, symlink escape, paths outside the root,",
        "unknown schemes, S3) are built by the tests themselves.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    render_pdf(CLAIMS_ADJUSTER, HERE / CLAIMS_ADJUSTER["file"], embed_font=True)
    render_docx(REGISTERED_NURSE, HERE / REGISTERED_NURSE["file"])
    (HERE / CUSTOMER_SUCCESS_MANAGER["file"]).write_text(render_markdown(CUSTOMER_SUCCESS_MANAGER), encoding="utf-8")
    (HERE / SOFTWARE_ENGINEER["file"]).write_bytes(render_text(SOFTWARE_ENGINEER).encode("utf-8"))
    render_pdf(CLAIMS_PROCESS_MAP, HERE / CLAIMS_PROCESS_MAP["file"], embed_font=False)

    (HERE / "corrupt.pdf").write_bytes(CORRUPT_PDF)
    (HERE / "empty.txt").write_bytes(b"")
    (HERE / "latin1.txt").write_bytes(
        "Résumé of duties: café manager, 5 years — naïve encoding test.\r\n".encode("cp1252")
    )
    (HERE / "no_document_xml.docx").write_bytes(no_document_xml_docx())
    scanned_pdf(HERE / "scanned.pdf")

    (HERE / "README.md").write_text(readme(), encoding="utf-8")
    for doc in GOOD:
        n = words(doc)
        size = (HERE / doc["file"]).stat().st_size
        print(f"{doc['file']}: {n} words, {size} bytes")
        if not 300 <= n <= 900:
            raise SystemExit(f"{doc['file']}: {n} words, want 300-900")
        if size >= 100_000:
            raise SystemExit(f"{doc['file']}: {size} bytes, want < 100 KB")


if __name__ == "__main__":
    main()

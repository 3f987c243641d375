#!/usr/bin/env python3
"""Regenerates the sample roles that `./etter dev` pushes (examples/roles/ and roles.csv).

Five roles of a fictional insurer, Northfield Mutual, with job descriptions as PDF, DOCX and
Markdown and a process map as PDF. Three job descriptions and the process map share their text
with the document fixtures of the tests (testdata/documents/generate.py, whose
renderers this script uses too); the underwriter and the fraud investigator are written here.

    python3 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install 'fpdf2==2.8.9' 'python-docx==1.2.0'
    /tmp/fixtures-venv/bin/python examples/generate.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLES = HERE / "roles"
FIXTURES = HERE.parent / "testdata" / "documents" / "generate.py"

spec = importlib.util.spec_from_file_location("fixtures_generate", FIXTURES)
assert spec and spec.loader
fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixtures)

UNDERWRITER = {
    "file": "underwriter_jd.docx",
    "title": "Commercial Lines Underwriter",
    "subtitle": "Northfield Mutual Insurance | Commercial Property & Casualty | Hartford, CT (hybrid)",
    "table": [("Reports to", "Underwriting Manager"), ("Authority", "Up to $2M total insured value"), ("Travel", "10%")],
    "sections": [
        ("About the role", [
            ("p", "The Commercial Lines Underwriter decides which small and mid-sized businesses "
                  "Northfield Mutual insures and on what terms. You assess risk from applications, "
                  "inspection reports and loss histories, set prices within the filed rating plans, "
                  "and build lasting relationships with independent agents. Your decisions shape the "
                  "profitability of a book of roughly 1,200 accounts."),
        ]),
        ("Responsibilities", [
            ("ul", [
                "Review new business submissions from independent agents within two business days",
                "Analyse loss runs, financial statements and inspection reports for each account",
                "Price accounts with the filed rating plans and documented schedule credits",
                "Decide to quote, decline or refer accounts above your underwriting authority",
                "Negotiate terms, deductibles and exclusions with agents on complex accounts",
                "Order loss-control inspections and follow up on recommendations",
                "Renew existing accounts and re-underwrite those with adverse loss trends",
                "Document every decision in the policy administration system for audit",
                "Monitor the book's loss ratio and report trends to the underwriting manager",
                "Visit key agencies to explain appetite and coach them on submissions",
            ]),
        ]),
        ("Skills and experience", [
            ("ul", [
                "Commercial property and general liability underwriting",
                "Financial statement analysis",
                "Risk assessment and pricing judgment",
                "Negotiation with independent agents",
                "Guidewire PolicyCenter or a similar policy administration system",
                "Microsoft Excel modelling",
                "Written communication of declinations and conditions",
                "CPCU designation or progress towards it",
            ]),
            ("p", "Three or more years of commercial lines underwriting, a bachelor's degree in "
                  "business, finance or a related field, and a property and casualty licence."),
        ]),
        ("How we work", [
            ("p", "Underwriters work in pods with a senior underwriter, an underwriting assistant and "
                  "a loss-control specialist. Authority grows with demonstrated results, and every "
                  "underwriter owns a development plan reviewed twice a year. Referral guidelines, "
                  "rating manuals and appetite guides are kept current by the product team, and "
                  "peer reviews of a sample of decisions every quarter keep the pod consistent."),
        ]),
    ],
}

FRAUD_INVESTIGATOR = {
    "file": "fraud_investigator_jd.md",
    "title": "Special Investigations Unit Fraud Investigator",
    "subtitle": "Northfield Mutual Insurance | Special Investigations Unit | Remote within the Northeast",
    "sections": [
        ("Summary", [
            ("p", "The Fraud Investigator examines claims that show signs of fraud, from staged auto "
                  "accidents to inflated contents losses and medical billing schemes. You gather "
                  "evidence, interview the people involved, work with law enforcement and the "
                  "state fraud bureau, and recommend whether claims are paid, denied or referred "
                  "for prosecution. The work protects honest policyholders from the cost of fraud."),
        ]),
        ("Responsibilities", [
            ("ul", [
                "Review claims referred by adjusters and the fraud scoring model within one day",
                "Plan each investigation and agree its scope with the claims team",
                "Take recorded statements and examinations under oath from claimants",
                "Collect evidence from public records, social media and medical providers",
                "Canvass accident scenes and arrange vehicle and fire cause inspections",
                "Analyse billing patterns to find links between claimants, clinics and repairers",
                "Write investigation reports with findings and a clear recommendation",
                "Refer suspected fraud to the state fraud bureau within statutory deadlines",
                "Testify in depositions, arbitrations and criminal proceedings",
                "Train adjusters to recognise fraud indicators during first notice of loss",
            ]),
        ]),
        ("Skills", [
            ("ul", [
                "Investigative interviewing",
                "Evidence handling and chain of custody",
                "Insurance fraud statutes and regulations",
                "Link analysis and data mining tools",
                "Report writing for legal audiences",
                "Courtroom testimony",
                "Discretion with confidential information",
            ]),
            ("p", "Five years of insurance, law enforcement or investigative experience; a CFE or "
                  "FCLS designation is preferred. A valid driver's licence is required."),
        ]),
        ("How we work", [
            ("p", "Investigators carry a caseload of about thirty open files and work from home, "
                  "travelling to scenes, body shops and interviews across the region two or three "
                  "days a week. Each case has a written plan agreed with the claims team, and every "
                  "recommendation is reviewed by the unit manager before a claim is denied. We "
                  "measure ourselves on the quality and timeliness of investigations, never on the "
                  "number of claims denied, and we treat every claimant with courtesy: most "
                  "referred claims turn out to be honest ones."),
        ]),
    ],
}

# role name, Draup role id, documents (relative to examples/roles; `process_map=` marks a map)
SAMPLE_ROLES = [
    ("Claims Adjuster", "draup-role-10001", [fixtures.CLAIMS_ADJUSTER["file"], f"process_map={fixtures.CLAIMS_PROCESS_MAP['file']}"]),
    ("Commercial Lines Underwriter", "draup-role-10002", [UNDERWRITER["file"]]),
    ("Fraud Investigator", "draup-role-10003", [FRAUD_INVESTIGATOR["file"]]),
    ("Nurse Case Manager", "draup-role-10004", [fixtures.REGISTERED_NURSE["file"]]),
    ("Customer Success Manager", "draup-role-10005", [fixtures.CUSTOMER_SUCCESS_MANAGER["file"]]),
]


def main() -> None:
    ROLES.mkdir(exist_ok=True)
    fixtures.render_pdf(fixtures.CLAIMS_ADJUSTER, ROLES / fixtures.CLAIMS_ADJUSTER["file"], embed_font=True)
    fixtures.render_pdf(fixtures.CLAIMS_PROCESS_MAP, ROLES / fixtures.CLAIMS_PROCESS_MAP["file"], embed_font=False)
    fixtures.render_docx(fixtures.REGISTERED_NURSE, ROLES / fixtures.REGISTERED_NURSE["file"])
    (ROLES / fixtures.CUSTOMER_SUCCESS_MANAGER["file"]).write_text(
        fixtures.render_markdown(fixtures.CUSTOMER_SUCCESS_MANAGER), encoding="utf-8"
    )
    fixtures.render_docx(UNDERWRITER, ROLES / UNDERWRITER["file"])
    (ROLES / FRAUD_INVESTIGATOR["file"]).write_text(fixtures.render_markdown(FRAUD_INVESTIGATOR), encoding="utf-8")
    rows = ["role_name,draup_role_id,documents,client_ref"]
    for n, (name, draup, docs) in enumerate(SAMPLE_ROLES, start=1):
        rows.append(f"{name},{draup},{';'.join(docs)},sample-{n}")
    (HERE / "roles.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for doc in (UNDERWRITER, FRAUD_INVESTIGATOR):
        n = fixtures.words(doc)
        if not 300 <= n <= 900:
            raise SystemExit(f"{doc['file']}: {n} words, want 300-900")
        print(f"{doc['file']}: {n} words")


if __name__ == "__main__":
    main()

/**
 * Errors in plain language, with what to do next: a customer-success manager reads these, not
 * the codes. The server's own message and action are shown under them, for support.
 */
export interface Explanation {
  /** What went wrong, in a sentence. */
  what: string;
  /** What to do about it. */
  next: string;
  /** Whether pressing Retry (after the fix) is the way forward. */
  retry: boolean;
}

const DOCUMENT_FIX = "Fix the document (or its address), then press Retry: the steps that already finished are kept.";

const BY_CODE: Record<string, Explanation> = {
  DOCUMENT_NOT_FOUND: {
    what: "A document of this role could not be found at the address given.",
    next: "Check the address (or upload the file there), then press Retry.",
    retry: true,
  },
  DOCUMENT_NOT_A_FILE: { what: "A document address points at a folder, not a file.", next: DOCUMENT_FIX, retry: true },
  DOCUMENT_ACCESS_DENIED: {
    what: "The pipeline is not allowed to read a document of this role.",
    next: "Ask for read access to the file or bucket for the pipeline, then press Retry.",
    retry: true,
  },
  DOCUMENT_STORE_UNAVAILABLE: {
    what: "The document store did not answer.",
    next: "This is usually temporary: press Retry in a few minutes.",
    retry: true,
  },
  DOCUMENT_FETCH_TIMEOUT: { what: "Downloading a document took too long.", next: "Press Retry; if it happens again, make the file smaller.", retry: true },
  DOCUMENT_EMPTY: { what: "A document of this role is empty.", next: DOCUMENT_FIX, retry: true },
  DOCUMENT_TOO_LARGE: { what: "A document is larger than the pipeline accepts.", next: "Send a shorter version of the document, then press Retry.", retry: true },
  DOCUMENT_TEXT_TOO_LONG: { what: "A document has more text than the pipeline reads.", next: "Send a shorter version of the document, then press Retry.", retry: true },
  DOCUMENT_EXPANDS_TOO_MUCH: { what: "A document unpacks to far more data than its size suggests.", next: "Save it again as a plain PDF or DOCX, then press Retry.", retry: true },
  DOCUMENT_FORMAT_UNSUPPORTED: { what: "A document is in a format the pipeline cannot read.", next: "Send it as PDF, DOCX, Markdown or plain text, then press Retry.", retry: true },
  DOCUMENT_FORMAT_MISMATCH: { what: "A document's contents do not match its file type.", next: "Save it again in the format its name says, then press Retry.", retry: true },
  DOCUMENT_NOT_UTF8: { what: "A text document is not in UTF-8.", next: "Save it as UTF-8 text, then press Retry.", retry: true },
  DOCUMENT_CORRUPT: { what: "A document is damaged and cannot be opened.", next: "Export it again from its source, then press Retry.", retry: true },
  DOCUMENT_ENCRYPTED: { what: "A document is password-protected.", next: "Send a copy without a password, then press Retry.", retry: true },
  DOCUMENT_NO_TEXT: { what: "A document contains no text: nothing in it is written as characters (text in images is not read).", next: "Send a version that holds the text itself, then press Retry.", retry: true },
  DOCUMENT_TEXT_UNMAPPED: { what: "A PDF draws its text with fonts that do not say which characters they show, so it cannot be read.", next: "Export the PDF again from the original document (or send the original as DOCX), then press Retry.", retry: true },
  DOCUMENT_EXTRACT_TIMEOUT: { what: "Reading a document took too long.", next: "Press Retry; if it happens again, send a simpler version.", retry: true },
  DOCUMENT_EXTRACTOR_FAILED: { what: "Reading a document failed.", next: "Press Retry; if it happens again, export the document again.", retry: true },
  DOCUMENT_EXTRACTOR_BUSY: { what: "The pipeline was too busy to read a document.", next: "Press Retry in a few minutes.", retry: true },
  DOCUMENT_URI_INVALID: { what: "A document address is not a valid address.", next: "Push the role again with a file:// or s3:// address.", retry: false },
  DOCUMENT_URI_SCHEME_UNSUPPORTED: { what: "A document address uses a kind of link the pipeline does not fetch.", next: "Use a file:// or s3:// address and push the role again.", retry: false },
  DOCUMENT_OUTSIDE_ROOT: { what: "A document address points outside the folder the pipeline may read.", next: "Move the file into the documents folder and push the role again.", retry: false },
  DOCUMENT_PATH_TRAVERSAL: { what: "A document address tries to leave the documents folder.", next: "Use a plain path inside the documents folder and push the role again.", retry: false },
  DOCUMENT_BUCKET_NOT_ALLOWED: { what: "A document is in a bucket the pipeline may not read.", next: "Use one of the allowed buckets and push the role again.", retry: false },
  LLM_UNAVAILABLE: { what: "The AI model did not answer.", next: "This is usually temporary: press Retry in a few minutes.", retry: true },
  LLM_ERROR: { what: "The AI model gave an answer the pipeline could not use.", next: "Press Retry; if it fails again, contact support with the trace id.", retry: true },
  STEP_FAILED: { what: "A step's last attempt ended without reporting a result (it took too long, or its worker stopped).", next: "Press Retry: the failed steps run again.", retry: true },
  WORKFLOW_TERMINATED: { what: "The run was stopped by an operator in Temporal.", next: "Press Retry to run the role again.", retry: true },
  WORKFLOW_TIMED_OUT: { what: "The run took longer than it may.", next: "Press Retry; if it happens again, contact support with the trace id.", retry: true },
  WORKFLOW_ENDED_WITHOUT_OUTCOME: { what: "The run ended without reporting a result.", next: "Press Retry to run the role again.", retry: true },
  WORKFLOW_NOT_FOUND: { what: "The run's workflow disappeared from Temporal.", next: "Press Retry to run the role again.", retry: true },
  CANCELLED: {
    what: "The run was cancelled: nothing more runs for it.",
    next: "Press Retry to run the role again; steps that had finished are kept.",
    retry: true,
  },
  WORKFLOW_CANCELLED: { what: "The run was cancelled.", next: "Press Retry to run it again.", retry: true },
  VALIDATION_ERROR: { what: "The role was not queued: some of its fields are missing or wrong.", next: "Fix the fields listed below and push the role again.", retry: false },
  STALE: { what: "The run stopped reporting progress and was given up.", next: "Press Retry to run the role again.", retry: true },
};

/** The plain-language reading of an error code (a generic one for codes not listed). */
export function explain(code: string, recoverable: boolean): Explanation {
  return (
    BY_CODE[code] ?? {
      what: "A step of this run failed.",
      next: recoverable ? "Press Retry: the failed steps run again." : "Fix the input named below, then push or retry the role.",
      retry: recoverable,
    }
  );
}

const FIELD_NAMES: Record<string, string> = {
  role_name: "Role name",
  draup_role_id: "Draup role ID",
  documents: "Documents",
  company_id: "Company",
  client_ref: "Reference",
};

/** `documents[0].uri` → `Documents (1st) address`; known fields by their label. */
export function fieldLabel(field: string): string {
  const match = /^(\w+)(?:\[(\d+)\])?(?:\.(\w+))?/.exec(field);
  if (!match) return field;
  const [, name = field, index, sub] = match;
  const base = FIELD_NAMES[name] ?? name.replace(/_/g, " ");
  const nth = index !== undefined ? ` #${Number(index) + 1}` : "";
  const part = sub ? ` ${sub === "uri" ? "address" : sub.replace(/_/g, " ")}` : "";
  return `${base}${nth}${part}`;
}

/** What a call's error means for the person at the screen: its code, its `ErrorInfo.reason`, its
 * message, and whether it lists the fields at fault (then those say what is wrong). */
export function callProblem(codeName: string, message: string, reason = "", listsFields = false): string {
  if (codeName === "INVALID_ARGUMENT" && listsFields) return "Nothing was sent on: correct what is listed below, then send it again.";
  // A system behind the server did not answer (the server itself did): its message says which.
  if (codeName === "UNAVAILABLE" && reason.endsWith("_UNAVAILABLE") && message) return message;
  switch (codeName) {
    case "UNAUTHENTICATED":
      return "Your sign-in is not valid any more. Sign in again.";
    case "PERMISSION_DENIED":
      return "You are not allowed to do this for this company.";
    case "NOT_FOUND":
      return "Not found: it does not exist, or it belongs to another company.";
    case "RESOURCE_EXHAUSTED":
      return `Too much at once: ${message}`;
    case "UNAVAILABLE":
      return "The server cannot be reached. Check your connection; the page keeps trying.";
    case "FAILED_PRECONDITION":
      return message;
    default:
      return message || codeName;
  }
}

import Papa from "papaparse";

import type { DocumentInput, RoleInput } from "./client.js";

/** The columns of a batch CSV (the Python client reads the same). */
export const CSV_COLUMNS = ["role_name", "draup_role_id", "documents", "client_ref"] as const;

/** Roles read from a CSV, or why the file cannot be used at all. */
export type CsvRoles = { roles: RoleInput[]; error?: undefined } | { roles?: undefined; error: string };

/**
 * Reads a batch CSV: a header row, then one role per row with `role_name`, `draup_role_id`,
 * `documents` (URIs separated by `;`, each optionally `process_map=URI` or `supporting=URI`) and
 * optionally `client_ref` (defaults to `row N`, N counting the header as row 1). Rows are not
 * validated here: the server answers each row with its problems.
 */
export function parseRolesCsv(text: string): CsvRoles {
  const parsed = Papa.parse<Record<string, string>>(text.replace(/^\uFEFF/, ""), {
    header: true,
    skipEmptyLines: "greedy",
    transformHeader: (h) => h.trim().toLowerCase(),
  });
  const fields = parsed.meta.fields ?? [];
  const missing = CSV_COLUMNS.slice(0, 3).filter((c) => !fields.includes(c));
  if (missing.length > 0) {
    return {
      error: `The file needs a header row with the columns ${CSV_COLUMNS.slice(0, 3).join(", ")} (and optionally client_ref); ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} missing.`,
    };
  }
  const broken = parsed.errors.find((e) => e.type === "Quotes" || e.type === "Delimiter");
  if (broken) {
    return { error: `The file is not valid CSV near row ${(broken.row ?? 0) + 2}: ${broken.message}.` };
  }
  if (parsed.data.length === 0) return { error: "The file has a header row but no roles." };
  const roles = parsed.data.map((row, index) => ({
    roleName: (row.role_name ?? "").trim(),
    draupRoleId: (row.draup_role_id ?? "").trim(),
    documents: splitDocuments(row.documents ?? ""),
    clientRef: (row.client_ref ?? "").trim() || `row ${index + 2}`,
  }));
  return { roles };
}

function splitDocuments(cell: string): DocumentInput[] {
  return cell
    .split(";")
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const [kind, ...rest] = part.split("=");
      const uri = rest.join("=");
      if ((kind === "process_map" || kind === "supporting" || kind === "job_description") && uri) {
        return { type: kind, uri };
      }
      return part;
    });
}

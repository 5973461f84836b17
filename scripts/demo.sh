#!/usr/bin/env bash
# The demo: the sample org end to end on an embedded SQLite database under out/.
# Run it through `make demo`, which prepares the virtual environment first.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out
DB="sqlite:///$OUT/demo.db"
rm -rf "$OUT"
mkdir -p "$OUT/records"

step() { printf '\n== %s\n' "$1"; }

step "1. Validate the sample org"
metabill validate-config .

step "2. Create the database from the metadata ($OUT/demo.db)"
metabill db migrate --db "$DB"

step "3. Load the sample data (data/*.csv, in file-name order)"
for file in data/[0-9]*_*.csv; do
    object=$(basename "$file" .csv)
    object=${object#*_}          # 05_Order.csv -> Order
    metabill load "$object" "$file" --db "$DB"
done

step "4. Invoice runs and finalization"
run() { metabill invoice-run --db "$DB" --invoice-date "$3" --period-start "$1" --period-end "$2" "${@:4}"; }
# Exit code 4 means "done, except for the records listed": the final invoices of use cases 2 and 3
# wait until their sub invoices are finalized, so the first runs over the orders end with 4.
partly() { "$@" || [ $? -eq 4 ]; }
echo "-- a dry run first: what the order filters would bill (nothing is written)"
partly run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --dry-run
echo "-- use case 1: progress invoices per milestone, one run per month, finalized right away"
run 2024-03-01 2024-03-31 2024-03-15 --filter "UC1 Sub Invoice" --finalize
metabill payment register INV-2024-00001 1190.00 --date 2024-03-28 --reference "Abschlag 1" --db "$DB"
run 2024-04-01 2024-04-30 2024-04-15 --filter "UC1 Sub Invoice" --finalize
metabill payment register INV-2024-00002 1190.00 --date 2024-04-30 --reference "Abschlag 2" --db "$DB"
echo "-- use cases 2 and 3: partial/progress invoices from partial deliveries, standard invoices for the orders"
echo "   (the final invoices wait until their sub invoices are finalized)"
partly run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --show-invoices --finalize
echo "-- the same run again: the sub invoices are final now, so the final invoices are built"
run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --show-invoices --finalize
echo "-- use case 1: the final invoice of the project (June)"
run 2024-06-01 2024-06-30 2024-06-10 --filter "UC1 Final Invoice" --show-invoices --finalize

step "5. More payments, a cancellation, and why each booking posts where it does"
metabill payment register INV-2024-00005 1249.19 --date 2024-10-14 --db "$DB"
metabill payment register INV-2024-00006 500.00 --date 2024-10-15 --db "$DB"
metabill cancel INV-2024-00008 --reason "Wrong maintenance period" --date 2024-10-20 --db "$DB"
metabill explain INV-2024-00011 --db "$DB"

step "6. SEPA files ($OUT/sepa-*.xml, XSD-validated; --created makes them reproducible)"
echo "-- direct debits of the open Direct Debit invoices (INV-2024-00008 was cancelled in step 5)"
metabill export sepa-debit --business-entity DE01 --db "$DB" --out "$OUT/sepa-debit.xml" --created 2024-10-25T09:00:00
echo "-- the same export again: the export history locks what was exported (--force would repeat it)"
metabill export sepa-debit --business-entity DE01 --db "$DB" --dry-run --created 2024-10-25T09:05:00
echo "-- the bank confirms the collection; then Nordlicht Logistik pays 300.00 on account, with nothing open:"
echo "   the free prepayment is paid back by SEPA credit transfer (balance and reverse balance locked)"
metabill payment register INV-2024-00010 14280.00 --date 2024-10-28 --payment-method SEPA --reference "SEPA-Lastschrift" --db "$DB"
metabill payment on-account 10004 300.00 --type Prepayment --date 2024-10-29 --reference "Vorauszahlung" --db "$DB"
metabill export sepa-balances --business-entity DE01 --db "$DB" --out "$OUT/sepa-balances.xml" --created 2024-10-30T09:00:00
echo "-- January 2025: the credit order ORD-2025-001 of Nordlicht Logistik, paid out by SEPA credit transfer"
run 2025-01-01 2025-01-31 2025-01-15 --filter "Order Invoice" --show-invoices --finalize
metabill export sepa-credit --business-entity DE01 --db "$DB" --out "$OUT/sepa-credit.xml" --created 2025-01-15T09:00:00

step "7. Balances: an overpayment, the assignment job, the schedules"
echo "-- 1300.00 on INV-2024-00011 (1190.00): AllowOverpayments is off, so 110.00 becomes a free balance"
metabill payment register INV-2024-00011 1300.00 --date 2025-01-20 --db "$DB"
metabill payment on-account 10001 5000.00 --date 2025-01-21 --reference "Sammelzahlung" --db "$DB"
echo "-- AssignBalancesChain: free balances to the oldest due open invoices of the account (split when larger)"
metabill jobs run AssignBalancesChain --date 2025-01-22 --db "$DB"
metabill jobs next --count 3 --at 2025-03-29T12:00Z

step "8. Cash management: entries and payments (docs/decisions.md, \"Cash management\")"
echo "-- the org keeps EnableCashManagementIntegration off; --enable-integration prepares this database as if it were on"
echo "-- (seed 000's invoice fix tasks: entries for the finalized invoices, CM payments from the payment balances)"
cm() { metabill "$@" --db "$DB"; }
cm fix-invoices --task create-or-fix-entries --task create-payments-and-migrate-balances --enable-integration --date 2025-01-20
cm entries list --invoice INV-2024-00003 --invoice INV-2024-00004 --invoice INV-2024-00007
echo "-- a payment on INV-2024-00007, taken over by cash management: it settles the entry (a second run changes nothing)"
cm payment register INV-2024-00007 2300.00 --date 2025-01-21 --reference "RE INV-2024-00007"
cm fix-invoices --task create-payments-and-migrate-balances --enable-integration --invoice INV-2024-00007 --date 2025-01-21
cm entries list --invoice INV-2024-00007
cm fix-invoices --task create-or-fix-entries --task create-payments-and-migrate-balances --enable-integration --date 2025-01-21

step "9. Booking journal and DATEV export ($OUT/)"
metabill export bookings --format csv --db "$DB" --out "$OUT/booking-journal.csv"
metabill export datev --db "$DB" --out "$OUT/EXTF_Buchungsstapel.csv" --to 2024-12-31

step "10. Export records as CSV ($OUT/records/)"
for object in Account Order OrderItem Partial_Delivery__c Opportunity OpportunityLineItem InvoiceRun Invoice InvoiceLineItem Balance BookingDetail AccountingDocument AccountingDocumentItem \
              InvoiceExportHistory Entry EntryItem Installment Payment Reduction; do
    metabill export-records "$object" --db "$DB" --out "$OUT/records/$object.csv"
done

step "11. Invoice documents as HTML and PDF ($OUT/invoices/)"
invoices=$(python - "$OUT/records/Invoice.csv" <<'PY'
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    print(" ".join(row["Name"] for row in csv.DictReader(handle) if row.get("Name")))
PY
)
# shellcheck disable=SC2086  # one argument per invoice number
metabill render $invoices --format html --format pdf --out "$OUT/invoices" --db "$DB"

step "12. E-invoices ($OUT/einvoices/): XRechnung CII and UBL as stored at finalization, ZUGFeRD (PDF/A-3)"
# shellcheck disable=SC2086  # one argument per invoice number
metabill render $invoices --format xrechnung-cii --format xrechnung-ubl --format zugferd --out "$OUT/einvoices" --db "$DB"
echo "-- validated offline: XSD + CEN EN 16931 + KoSIT XRechnung rules (a ZUGFeRD PDF: its embedded XML)"
metabill einvoice validate "$OUT"/einvoices/*

step "13. Bank statement in (examples/bank/), payment run out (pain.008.001.08)"
echo "-- a camt.053 statement: two invoices paid with their number (assigned), one payment without (review),"
echo "   and the direct debit of INV-2024-00010 returned by the debtor's bank (the invoice is open again)"
metabill bank import examples/bank/demo-camt053-2025-01-24.xml --db "$DB"
echo "-- the same statement again changes nothing"
metabill bank import examples/bank/demo-camt053-2025-01-24.xml --db "$DB"
metabill bank review --db "$DB"
metabill bank explain PE-000003 --db "$DB"
echo "-- payment instruments from the accounts' bank fields (IBAN/BIC checked): the payment run takes the mandate there"
metabill instrument from-accounts --db "$DB"
echo "-- the payment run: the returned direct debit collected again as pain.008.001.08, on the first TARGET2"
echo "   business day the lead time allows (RCUR: the mandate's earlier collections went through)"
echo "   (the same export setting as step 6: a returned collection does not lock the invoice)"
metabill export sepa-debit --business-entity DE01 --db "$DB" \
    --out "$OUT/sepa-payment-run.xml" --created 2025-01-27T09:00:00

step "14. Recurring billing: the sample subscriptions (examples/subscriptions/), two consecutive months"
for file in examples/subscriptions/[0-9]*_*.csv; do
    object=$(basename "$file" .csv)
    metabill load "${object#*_}" "$file" --db "$DB"
done
echo "-- January: prorated start, one-time fee, a yearly item, arrears, a canceled subscription caught up"
run 2024-01-01 2024-01-31 2024-01-31 --filter Subscriptions --finalize
echo "-- the same month again bills nothing; February bills the next periods (an upgrade on 16 February)"
run 2024-01-01 2024-01-31 2024-01-31 --filter Subscriptions
run 2024-02-01 2024-02-29 2024-02-29 --filter Subscriptions
latest() { python - "$OUT/demo.db" "$1" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])
PY
}
echo "-- explain: which item, which service period, which proration"
metabill explain "$(latest "SELECT i.name FROM invoice i JOIN invoicelineitem l ON l.invoice = i.id
                           WHERE l.description LIKE '%at 149%' ORDER BY i.id DESC")" --db "$DB"
metabill finalize --run "$(latest "SELECT name FROM invoicerun ORDER BY id DESC")" --db "$DB"

step "15. A consultant's day: a new org in one command, customer data corrected by upsert"
rm -rf "$OUT/new-org"
metabill init "$OUT/new-org"
metabill load Account examples/admin/accounts-corrected.csv --upsert --key AccountNumber --db "$DB"

step "16. Audit: the books reconcile, with the DATEV and SEPA files"
metabill audit --db "$DB" --datev "$OUT/EXTF_Buchungsstapel.csv" \
    --sepa "$OUT/sepa-debit.xml" --sepa "$OUT/sepa-balances.xml" --sepa "$OUT/sepa-credit.xml" \
    --sepa "$OUT/sepa-payment-run.xml"

step "Summary"
printf 'database: %s\n' "$OUT/demo.db"
python - "$OUT/records" <<'PY'
import csv, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.csv")):
    with path.open(newline="", encoding="utf-8") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    print(f"{path.stem:28s} {rows:5d} records")
PY

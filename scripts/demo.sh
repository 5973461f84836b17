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
echo "-- a dry run first: what the order filters would bill (nothing is written)"
run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --dry-run
echo "-- use case 1: progress invoices per milestone, one run per month, finalized right away"
run 2024-03-01 2024-03-31 2024-03-15 --filter "UC1 Sub Invoice" --finalize
metabill payment register INV-2024-00001 1190.00 --date 2024-03-28 --reference "Abschlag 1" --db "$DB"
run 2024-04-01 2024-04-30 2024-04-15 --filter "UC1 Sub Invoice" --finalize
metabill payment register INV-2024-00002 1190.00 --date 2024-04-30 --reference "Abschlag 2" --db "$DB"
echo "-- use cases 2 and 3: partial/progress invoices from partial deliveries, standard invoices for the orders"
echo "   (the final invoices wait until their sub invoices are finalized)"
run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --show-invoices --finalize
echo "-- the same run again: the sub invoices are final now, so the final invoices are built"
run 2024-01-01 2024-12-31 2024-09-30 --filter "Order Sub Invoice" --filter "Order Invoice" --show-invoices --finalize
echo "-- use case 1: the final invoice of the project (June)"
run 2024-06-01 2024-06-30 2024-06-10 --filter "UC1 Final Invoice" --show-invoices --finalize

step "5. More payments, a cancellation, and why each booking posts where it does"
metabill payment register INV-2024-00005 1249.19 --date 2024-10-14 --db "$DB"
metabill payment register INV-2024-00006 500.00 --date 2024-10-15 --db "$DB"
metabill cancel INV-2024-00008 --reason "Wrong maintenance period" --date 2024-10-20 --db "$DB"
metabill explain INV-2024-00011 --db "$DB"

step "6. Booking journal and DATEV export ($OUT/)"
metabill export bookings --format csv --db "$DB" --out "$OUT/booking-journal.csv"
metabill export datev --db "$DB" --out "$OUT/EXTF_Buchungsstapel.csv" --to 2024-12-31

step "7. Export records as CSV ($OUT/records/)"
for object in Account Order OrderItem Partial_Delivery__c Opportunity OpportunityLineItem InvoiceRun Invoice InvoiceLineItem Balance BookingDetail AccountingDocument AccountingDocumentItem; do
    metabill export-records "$object" --db "$DB" --out "$OUT/records/$object.csv"
done

step "Summary"
printf 'database: %s\n' "$OUT/demo.db"
python - "$OUT/records" <<'PY'
import csv, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.csv")):
    with path.open(newline="", encoding="utf-8") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    print(f"{path.stem:28s} {rows:5d} records")
PY

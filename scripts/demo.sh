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

step "4. Export the loaded records as CSV ($OUT/records/)"
for file in data/[0-9]*_*.csv; do
    object=$(basename "$file" .csv)
    object=${object#*_}
    metabill export-records "$object" --db "$DB" --out "$OUT/records/$object.csv"
done

step "Summary"
printf 'database: %s\n' "$OUT/demo.db"
for file in "$OUT"/records/*.csv; do
    printf '%-28s %5d records\n' "$(basename "$file" .csv)" "$(( $(wc -l < "$file") - 1 ))"
done

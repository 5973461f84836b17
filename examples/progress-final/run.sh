#!/usr/bin/env bash
# The worked example of domain-spec §5.6: two progress invoices, their payments,
# the final invoice and its payment, on a fresh SQLite database. Prints the
# booking journal as CSV on standard output; everything else goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
if ! command -v metabill >/dev/null 2>&1; then
    export PATH="$root/.venv/bin:$PATH"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
DB="sqlite:///$work/example.db"

{
    metabill db migrate --db "$DB"
    for file in data/01_Account.csv data/02_Product.csv data/03_Opportunity.csv data/04_OpportunityLineItem.csv; do
        object=$(basename "$file" .csv)
        metabill load "${object#*_}" "$file" --db "$DB"
    done
    # Progress invoice P1 (milestone 1, March) and its payment.
    metabill invoice-run --db "$DB" --filter "UC1 Sub Invoice" \
        --period-start 2024-03-01 --period-end 2024-03-31 --invoice-date 2024-03-15 --finalize
    metabill payment register INV-2024-00001 1190.00 --date 2024-03-28 --db "$DB"
    # Progress invoice P2 (milestone 2, April) and its payment.
    metabill invoice-run --db "$DB" --filter "UC1 Sub Invoice" \
        --period-start 2024-04-01 --period-end 2024-04-30 --invoice-date 2024-04-15 --finalize
    metabill payment register INV-2024-00002 1190.00 --date 2024-04-30 --db "$DB"
    # Final invoice F (June): all three milestones less the two paid progress invoices.
    metabill invoice-run --db "$DB" --filter "UC1 Final Invoice" \
        --period-start 2024-06-01 --period-end 2024-06-30 --invoice-date 2024-06-10 --finalize
    metabill payment register INV-2024-00003 1190.00 --date 2024-06-20 --db "$DB"
} >&2

metabill export bookings --format csv --db "$DB"

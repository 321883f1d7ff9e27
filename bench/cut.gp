# Throughput over time around a cut (bench/README.md, "Long fast paths"):
#   target/release/ressh-bench --only wan --trace cut.csv ...
#   gnuplot -e "csv='cut.csv'; png='bench/cut-100ms.png'" bench/cut.gp
set terminal pngcairo size 900,420 font ",11"
set output png
set datafile separator ","
set key off
set grid
set xlabel "seconds from the cut"
set ylabel "MB/s received (50 ms bins)"
set title "ressh download through the delay relay, 100 ms round trip, 1 Gbit/s; the relay cuts the connection at 0"
set arrow from 0, graph 0 to 0, graph 1 nohead dashtype 2
plot csv using 1:2 skip 1 with steps lw 2

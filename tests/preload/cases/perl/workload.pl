# SPDX-License-Identifier: MIT
# Preload workload for perl: hashes, regexes, sort, sprintf, pack/unpack, closures and a large
# string built and split. Each section prints a short line; a final digest covers them all.
# Deterministic: our own LCG instead of rand, sorted keys (run with PERL_HASH_SEED=0 too).
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my $all = Digest::MD5->new;
sub report {
    my ($name, $value) = @_;
    $all->add("$name\0$value\0");
    $value = 'md5:' . md5_hex($value) if length($value) > 96;
    print "$name: $value\n";
}

# Park-Miller LCG: exact in perl's integers and the same on every build.
my $seed = 12345;
sub rnd { $seed = ($seed * 16807) % 2147483647; return $seed % $_[0]; }

# Hashes: grow, overwrite, delete a third, nest.
my %h;
for my $i (1 .. 200_000) {
    my $k = 'k' . rnd(60_000);
    push @{ $h{$k} }, $i if $i % 5;
    $h{$k} //= [];
}
delete $h{$_} for grep { /7$/ } keys %h;
my %nested;
$nested{ $_ % 97 }{ $_ % 13 } += $_ for 1 .. 100_000;
report('hash.keys', scalar keys %h);
my $entries = 0;
$entries += scalar @{ $h{$_} } for keys %h;
report('hash.entries', $entries);
report('nested', join ',', map { my $k = $_; "$k=" . join(':', map { $nested{$k}{$_} } sort { $a <=> $b } keys %{ $nested{$k} }) } 0 .. 9);

# Regexes: captures, global matches, substitutions with code.
my @log = map { sprintf('%03d.%03d.%03d.%03d user%d "GET /p/%d" %d %d', rnd(256), rnd(256), rnd(256), rnd(256), $_ % 41, $_, 200 + $_ % 4, rnd(100_000)) } 1 .. 40_000;
my (%bytes, $gets);
for (@log) {
    /^(\d+)\.\d+\.\d+\.\d+ (user\d+) "GET (\/p\/\d+)" (\d+) (\d+)$/ or die "no match: $_";
    $bytes{$2} += $5;
    $gets++ if $4 == 200;
}
my $text = join "\n", @log;
(my $masked = $text) =~ s/(\d+)/length($1)/ge;
my @words = $text =~ /user(\d+)/g;
report('re.users', join ',', map { "$_=$bytes{$_}" } (sort keys %bytes)[0 .. 4]);
report('re.gets', $gets);
report('re.masked', md5_hex($masked));
report('re.words', scalar @words);

# Sort: numeric, string, multi-key with a Schwartzian transform.
my @nums = map { rnd(1_000_000) } 1 .. 100_000;
my @by_num = sort { $a <=> $b } @nums;
my @by_str = sort @nums;
my @multi = map { $_->[0] } sort { $a->[1] <=> $b->[1] or $a->[0] cmp $b->[0] } map { [$_, length $_] } @by_str;
report('sort.num', "@by_num[0..4] .. $by_num[-1]");
report('sort.str', "@by_str[0..4]");
report('sort.multi', md5_hex(join ',', @multi));

# sprintf and pack/unpack.
my $fmt = join '', map { sprintf('%08.3f|%-6s|%x|%e;', $_ / 7, "n$_", $_ * 31, $_ * 1.5) } 1 .. 20_000;
my $packed = pack('(N n C A4 Z*)*', map { ($_, $_ % 65536, $_ % 256, "ab$_", "z" x ($_ % 9)) } 1 .. 20_000);
my @un = unpack('(N n C A4 Z*)*', $packed);
report('sprintf', md5_hex($fmt));
report('pack.len', length $packed);
report('unpack', scalar(@un) . " $un[0] $un[1] $un[2] $un[3] $un[-5]");

# Closures: counters that capture their own lexicals, created and dropped in bulk.
my @counters = map { my $n = $_; my @hist; sub { push @hist, $n++; return scalar @hist } } 1 .. 5_000;
my $calls = 0;
for my $round (1 .. 20) { $calls += $_->() for @counters; }
@counters = ();
report('closures', $calls);

# A large string built by appends, then split and rejoined.
my $big = '';
$big .= sprintf("%d:%s,", $_, 'x' x ($_ % 50)) for 1 .. 300_000;
my @parts = split /,/, $big;
my %lens;
$lens{ length $_ }++ for @parts;
report('big.len', length $big);
report('big.parts', scalar @parts);
report('big.lens', join ',', map { "$_=$lens{$_}" } (sort { $a <=> $b } keys %lens)[0 .. 5]);
report('big.rejoin', md5_hex(join ';', reverse @parts));

print 'digest: ', $all->hexdigest, "\n";

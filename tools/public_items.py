#!/usr/bin/env python3
"""Counts fhe-nn's public API from rustdoc's JSON output (needs a nightly toolchain):

    CARGO_TARGET_DIR=target/nightly cargo +nightly rustdoc -p fhe-nn --lib \
        -- -Z unstable-options --output-format json
    python3 tools/public_items.py target/nightly/doc/fhe_nn.json [--members]

Walks the crate from its root through public modules and re-exports (items hidden from the
docs left out) and counts each reachable item once: modules, types, functions, constants,
and the members a user can name (public fields, variants, inherent methods and associated
items; trait implementations are not new API). Prints the total and one line per item.
"""
import json
import sys
d=json.load(open(sys.argv[1]))
idx=d['index']; root=str(d['root']); paths=d['paths']
def kind(it): return next(iter(it['inner']))
seen=set(); out=[]
def pub(it): return it['visibility'] in ('public','default') and not any('hidden' in str(a) for a in it.get('attrs',[]))
def members(it):
    k=kind(it); inner=it['inner'][k]; ms=[]
    if k=='struct':
        kd=inner['kind']
        if 'plain' in kd: ms+=kd['plain']['fields']
        elif 'tuple' in kd: ms+=[f for f in kd['tuple'] if f is not None]
    if k=='enum': ms+=inner['variants']
    if k in ('struct','enum'):
        for im in inner['impls']:
            ii=idx.get(str(im))
            if ii and ii['inner']['impl'].get('trait') is None: ms+=ii['inner']['impl']['items']
    if k=='trait': ms+=inner['items']
    return [idx[str(m)] for m in ms if str(m) in idx and pub(idx[str(m)])]
def visit(i,prefix):
    i=str(i)
    if i not in idx: return
    it=idx[i]
    if it.get('crate_id',0)!=0 or not pub(it): return
    k=kind(it)
    if k=='use':
        t=it['inner']['use'].get('id')
        if t is not None: visit(t,prefix)
        return
    if i in seen: return
    seen.add(i)
    name=(it.get('name') or '')
    if k=='module':
        for c in it['inner']['module']['items']: visit(c,prefix+name+'::')
        out.append((prefix+name,k,0,[])); return
    ms=members(it)
    out.append((prefix+name,k,len(ms),[m['name'] for m in ms]))
visit(root,'')
total=sum(1+o[2] for o in out)
print('total',total,'top-level',len(out))
for o in sorted(out):
    print(f"{o[2]+1:4} {o[1]:9} {o[0]}  {' '.join(o[3]) if len(sys.argv)>2 else ''}")

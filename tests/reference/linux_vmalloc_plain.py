"""A plain, line-by-line port of Linux's vmap-area allocator: the oracle of ``linux-vmalloc``.

What is ported, statement by statement:

* ``lib/rbtree.c`` and ``include/linux/rbtree_augmented.h``: ``__rb_insert``,
  ``____rb_erase_color``, ``rb_erase_augmented`` (the ``__rb_erase_augmented`` body),
  ``rb_link_node``, ``rb_insert_color``/``rb_erase`` (the dummy-callback versions), and the
  callbacks ``RB_DECLARE_CALLBACKS_MAX`` generates for ``subtree_max_size``.  The tree shape
  therefore evolves exactly as in the kernel, which matters: for alignments above a page the
  search result depends on it.
* ``mm/vmalloc.c`` as of Linux v6.6.14 (read from a copy of that release's tree): the free
  tree/list helpers ``find_va_links``, ``get_va_next_sibling``, ``__link_va``,
  ``__unlink_va``, ``augment_tree_propagate_from``, ``insert_vmap_area_augment``,
  ``__merge_or_add_vmap_area``; the search ``is_within_this_va`` and
  ``find_vmap_lowest_match``; ``classify_va_fit_type`` and ``adjust_va_to_fit_type``;
  ``__alloc_vmap_area`` and ``alloc_vmap_area`` (with its overflow path: one purge, one
  retry); ``free_vmap_area``; ``free_vmap_area_noflush`` (the lazy free, merged into the
  purge tree) and ``__purge_vmap_area_lazy``.  v6.6 is the allocator of every release from
  v5.18 to v6.8 in the lines that decide placement; v6.9 replaced the global busy/lazy lists
  with per-node ones and added per-node pools of freed areas (see docs/replay.md).

The search has had three rules, selectable with ``search=``:

``"6.8"`` (default)
    commit 9333fe98d0a6 ("mm/vmalloc: add adjust_search_size parameter"), in every release
    up to v6.8: the tree is searched for ``size + align - 1`` when ``align > PAGE_SIZE`` and
    the window ``[vstart, vend)`` is not exactly ``size`` long, else for ``size``; the
    roll-back shifts ``vstart`` past a parent whose right subtree it enters (9f531973dff3).
``"exact"``
    commit 9f531973dff3 ("mm/vmalloc: do not adjust the search size for alignment
    overhead") before 9333fe98d0a6: always ``size``, with the ``vstart`` shift.
``"5.2"``
    commit 68ad4a330433 ("mm/vmalloc.c: keep track of free blocks for vmap allocation",
    v5.2), still so in a v5.15.100 tree: always ``size + align - 1``, no ``vstart`` shift.

Replaced by Python: pointers by object references, ``struct rb_node **link`` by a
``(holder, attribute)`` pair, ``__rb_parent_color`` by two fields, ``list_head`` by a small
doubly linked list, the busy tree by a dict (its shape never influences placement), the slab
caches and per-CPU preload by plain allocation, failure values by ``None``.  Initial state: one
free block ``[start, end)`` (the kernel's ``vmap_init_free_space`` builds the free blocks around
the early areas; a region here has none).  Nothing is optimised: it is the oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise

RB_RED = 0
RB_BLACK = 1
ULONG_MAX = (1 << 64) - 1

SEARCH_RULES = ("6.8", "exact", "5.2")


# -- include/linux/rbtree_types.h, rbtree.h -----------------------------------------------------


class RbNode:
    __slots__ = ("color", "left", "parent", "right")

    def __init__(self) -> None:
        self.parent: RbNode | None = None
        self.color = RB_RED
        self.left: RbNode | None = None
        self.right: RbNode | None = None


class RbRoot:
    __slots__ = ("node",)

    def __init__(self) -> None:
        self.node: RbNode | None = None


Link = tuple[object, str]  # struct rb_node **: the holder (root or node) and its field


def deref(link: Link) -> RbNode | None:
    holder, field = link
    node: RbNode | None = getattr(holder, field)
    return node


def store(link: Link, node: RbNode | None) -> None:
    holder, field = link
    setattr(holder, field, node)


def rb_parent(rb: RbNode) -> RbNode | None:
    return rb.parent


def rb_is_red(rb: RbNode) -> bool:
    return rb.color == RB_RED


def rb_is_black(rb: RbNode) -> bool:
    return rb.color == RB_BLACK


def rb_set_black(rb: RbNode) -> None:
    rb.color = RB_BLACK


def rb_red_parent(red: RbNode) -> RbNode | None:
    return red.parent


def rb_set_parent(rb: RbNode, p: RbNode | None) -> None:
    rb.parent = p


def rb_set_parent_color(rb: RbNode, p: RbNode | None, color: int) -> None:
    rb.parent = p
    rb.color = color


def rb_link_node(node: RbNode, parent: RbNode | None, rb_link: Link) -> None:
    node.parent = parent  # __rb_parent_color = parent: colour bit 0 = red
    node.color = RB_RED
    node.left = node.right = None
    store(rb_link, node)


def __rb_change_child(old: RbNode, new: RbNode | None, parent: RbNode | None, root: RbRoot) -> None:
    if parent:
        if parent.left is old:
            parent.left = new
        else:
            parent.right = new
    else:
        root.node = new


def __rb_rotate_set_parents(old: RbNode, new: RbNode, root: RbRoot, color: int) -> None:
    parent = rb_parent(old)
    new.parent, new.color = old.parent, old.color
    rb_set_parent_color(old, new, color)
    __rb_change_child(old, new, parent, root)


Rotate = Callable[[RbNode, RbNode], None]


def dummy_rotate(old: RbNode, new: RbNode) -> None:
    return None


def dummy_propagate(node: RbNode | None, stop: RbNode | None) -> None:
    return None


def dummy_copy(old: RbNode, new: RbNode) -> None:
    return None


# -- lib/rbtree.c ------------------------------------------------------------------------------


def __rb_insert(node: RbNode, root: RbRoot, augment_rotate: Rotate) -> None:
    parent = rb_red_parent(node)
    while True:
        # Loop invariant: node is red.
        if not parent:
            rb_set_parent_color(node, None, RB_BLACK)
            break
        if rb_is_black(parent):
            break
        gparent = rb_red_parent(parent)
        assert gparent is not None
        tmp = gparent.right
        if parent is not tmp:  # parent == gparent->rb_left
            if tmp and rb_is_red(tmp):
                # Case 1 - node's uncle is red (color flips).
                rb_set_parent_color(tmp, gparent, RB_BLACK)
                rb_set_parent_color(parent, gparent, RB_BLACK)
                node = gparent
                parent = rb_parent(node)
                rb_set_parent_color(node, parent, RB_RED)
                continue
            tmp = parent.right
            if node is tmp:
                # Case 2 - node's uncle is black and node is the parent's right child.
                tmp = node.left
                parent.right = tmp
                node.left = parent
                if tmp:
                    rb_set_parent_color(tmp, parent, RB_BLACK)
                rb_set_parent_color(parent, node, RB_RED)
                augment_rotate(parent, node)
                parent = node
                tmp = node.right
            # Case 3 - node's uncle is black and node is the parent's left child.
            gparent.left = tmp  # == parent->rb_right
            parent.right = gparent
            if tmp:
                rb_set_parent_color(tmp, gparent, RB_BLACK)
            __rb_rotate_set_parents(gparent, parent, root, RB_RED)
            augment_rotate(gparent, parent)
            break
        else:
            tmp = gparent.left
            if tmp and rb_is_red(tmp):
                # Case 1 - color flips
                rb_set_parent_color(tmp, gparent, RB_BLACK)
                rb_set_parent_color(parent, gparent, RB_BLACK)
                node = gparent
                parent = rb_parent(node)
                rb_set_parent_color(node, parent, RB_RED)
                continue
            tmp = parent.left
            if node is tmp:
                # Case 2 - right rotate at parent
                tmp = node.right
                parent.left = tmp
                node.right = parent
                if tmp:
                    rb_set_parent_color(tmp, parent, RB_BLACK)
                rb_set_parent_color(parent, node, RB_RED)
                augment_rotate(parent, node)
                parent = node
                tmp = node.left
            # Case 3 - left rotate at gparent
            gparent.right = tmp  # == parent->rb_left
            parent.left = gparent
            if tmp:
                rb_set_parent_color(tmp, gparent, RB_BLACK)
            __rb_rotate_set_parents(gparent, parent, root, RB_RED)
            augment_rotate(gparent, parent)
            break


def ____rb_erase_color(parent: RbNode, root: RbRoot, augment_rotate: Rotate) -> None:
    node: RbNode | None = None
    while True:
        # Loop invariants: node is black (or None on the first iteration), node is not the
        # root (parent is not None), and every leaf path through parent and node has one black
        # node fewer than the other leaf paths.
        sibling = parent.right
        if node is not sibling:  # node == parent->rb_left
            assert sibling is not None
            if rb_is_red(sibling):
                # Case 1 - left rotate at parent
                tmp1 = sibling.left
                assert tmp1 is not None
                parent.right = tmp1
                sibling.left = parent
                rb_set_parent_color(tmp1, parent, RB_BLACK)
                __rb_rotate_set_parents(parent, sibling, root, RB_RED)
                augment_rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.right
            if not tmp1 or rb_is_black(tmp1):
                tmp2 = sibling.left
                if not tmp2 or rb_is_black(tmp2):
                    # Case 2 - sibling color flip (p could be either color here)
                    rb_set_parent_color(sibling, parent, RB_RED)
                    if rb_is_red(parent):
                        rb_set_black(parent)
                    else:
                        node = parent
                        up = rb_parent(node)
                        if up:
                            parent = up
                            continue
                    break
                # Case 3 - right rotate at sibling (p could be either color here)
                tmp1 = tmp2.right
                sibling.left = tmp1
                tmp2.right = sibling
                parent.right = tmp2
                if tmp1:
                    rb_set_parent_color(tmp1, sibling, RB_BLACK)
                augment_rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4 - left rotate at parent + color flips
            tmp2 = sibling.left
            parent.right = tmp2
            sibling.left = parent
            rb_set_parent_color(tmp1, sibling, RB_BLACK)
            if tmp2:
                rb_set_parent(tmp2, parent)
            __rb_rotate_set_parents(parent, sibling, root, RB_BLACK)
            augment_rotate(parent, sibling)
            break
        else:
            sibling = parent.left
            assert sibling is not None
            if rb_is_red(sibling):
                # Case 1 - right rotate at parent
                tmp1 = sibling.right
                assert tmp1 is not None
                parent.left = tmp1
                sibling.right = parent
                rb_set_parent_color(tmp1, parent, RB_BLACK)
                __rb_rotate_set_parents(parent, sibling, root, RB_RED)
                augment_rotate(parent, sibling)
                sibling = tmp1
            tmp1 = sibling.left
            if not tmp1 or rb_is_black(tmp1):
                tmp2 = sibling.right
                if not tmp2 or rb_is_black(tmp2):
                    # Case 2 - sibling color flip
                    rb_set_parent_color(sibling, parent, RB_RED)
                    if rb_is_red(parent):
                        rb_set_black(parent)
                    else:
                        node = parent
                        up = rb_parent(node)
                        if up:
                            parent = up
                            continue
                    break
                # Case 3 - left rotate at sibling
                tmp1 = tmp2.left
                sibling.right = tmp1
                tmp2.left = sibling
                parent.left = tmp2
                if tmp1:
                    rb_set_parent_color(tmp1, sibling, RB_BLACK)
                augment_rotate(sibling, tmp2)
                tmp1 = sibling
                sibling = tmp2
            # Case 4 - right rotate at parent + color flips
            tmp2 = sibling.right
            parent.left = tmp2
            sibling.right = parent
            rb_set_parent_color(tmp1, sibling, RB_BLACK)
            if tmp2:
                rb_set_parent(tmp2, parent)
            __rb_rotate_set_parents(parent, sibling, root, RB_BLACK)
            augment_rotate(parent, sibling)
            break


class Callbacks:
    """``struct rb_augment_callbacks``."""

    def __init__(
        self,
        propagate: Callable[[RbNode | None, RbNode | None], None],
        copy: Callable[[RbNode, RbNode], None],
        rotate: Rotate,
    ) -> None:
        self.propagate = propagate
        self.copy = copy
        self.rotate = rotate


DUMMY_CALLBACKS = Callbacks(dummy_propagate, dummy_copy, dummy_rotate)


def rb_insert_color(node: RbNode, root: RbRoot) -> None:
    __rb_insert(node, root, dummy_rotate)


def rb_insert_augmented(node: RbNode, root: RbRoot, augment: Callbacks) -> None:
    __rb_insert(node, root, augment.rotate)


def __rb_erase_augmented(node: RbNode, root: RbRoot, augment: Callbacks) -> RbNode | None:
    child = node.right
    tmp = node.left
    if not tmp:
        # Case 1: node to erase has no more than 1 child (easy!)
        pc_parent, pc_color = node.parent, node.color
        parent = pc_parent
        __rb_change_child(node, child, parent, root)
        if child:
            child.parent, child.color = pc_parent, pc_color
            rebalance = None
        else:
            rebalance = parent if pc_color == RB_BLACK else None
        tmp = parent
    elif not child:
        # Still case 1, but this time the child is node->rb_left
        tmp.parent, tmp.color = node.parent, node.color
        parent = node.parent
        __rb_change_child(node, tmp, parent, root)
        rebalance = None
        tmp = parent
    else:
        successor = child
        tmp = child.left
        if not tmp:
            # Case 2: node's successor is its right child
            parent = successor
            child2 = successor.right
            augment.copy(node, successor)
        else:
            # Case 3: node's successor is leftmost under node's right child subtree
            while True:
                parent = successor
                successor = tmp
                tmp = tmp.left
                if not tmp:
                    break
            child2 = successor.right
            parent.left = child2
            successor.right = child
            rb_set_parent(child, successor)
            augment.copy(node, successor)
            augment.propagate(parent, successor)
        tmp = node.left
        successor.left = tmp
        rb_set_parent(tmp, successor)
        pc_parent, pc_color = node.parent, node.color
        tmp = pc_parent
        __rb_change_child(node, successor, tmp, root)
        if child2:
            successor.parent, successor.color = pc_parent, pc_color
            rb_set_parent_color(child2, parent, RB_BLACK)
            rebalance = None
        else:
            pc2_color = successor.color
            successor.parent, successor.color = pc_parent, pc_color
            rebalance = parent if pc2_color == RB_BLACK else None
        tmp = successor
    augment.propagate(tmp, None)
    return rebalance


def rb_erase_augmented(node: RbNode, root: RbRoot, augment: Callbacks) -> None:
    rebalance = __rb_erase_augmented(node, root, augment)
    if rebalance:
        ____rb_erase_color(rebalance, root, augment.rotate)


def rb_erase(node: RbNode, root: RbRoot) -> None:
    rebalance = __rb_erase_augmented(node, root, DUMMY_CALLBACKS)
    if rebalance:
        ____rb_erase_color(rebalance, root, dummy_rotate)


# -- include/linux/list.h ----------------------------------------------------------------------


class ListHead:
    __slots__ = ("next", "owner", "prev")

    def __init__(self, owner: VmapArea | None = None) -> None:
        self.prev: ListHead = self
        self.next: ListHead = self
        self.owner = owner


def list_add(new: ListHead, head: ListHead) -> None:
    nxt = head.next
    nxt.prev = new
    new.next = nxt
    new.prev = head
    head.next = new


def list_del_init(entry: ListHead) -> None:
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    entry.prev = entry.next = entry


def list_empty(head: ListHead) -> bool:
    return head.next is head


def list_entries(head: ListHead) -> Iterator[VmapArea]:
    pos = head.next
    while pos is not head:
        nxt = pos.next
        assert pos.owner is not None
        yield pos.owner
        pos = nxt


# -- mm/vmalloc.c (v6.6.14) --------------------------------------------------------------------


class VmapArea(RbNode):
    """``struct vmap_area``: ``va_start``/``va_end`` (bytes), the free tree's augmented value,
    and the list link."""

    __slots__ = ("list", "subtree_max_size", "va_end", "va_start")

    def __init__(self, va_start: int = 0, va_end: int = 0) -> None:
        super().__init__()
        self.va_start = va_start
        self.va_end = va_end
        self.subtree_max_size = 0
        self.list = ListHead(self)


def va_size(va: VmapArea) -> int:
    return va.va_end - va.va_start


def get_subtree_max_size(node: RbNode | None) -> int:
    return node.subtree_max_size if isinstance(node, VmapArea) else 0


def _compute_max(node: VmapArea, exit_: bool) -> bool:
    """``free_vmap_area_rb_augment_cb_compute_max`` (RB_DECLARE_CALLBACKS_MAX)."""
    mx = va_size(node)
    child = node.left
    if isinstance(child, VmapArea) and child.subtree_max_size > mx:
        mx = child.subtree_max_size
    child = node.right
    if isinstance(child, VmapArea) and child.subtree_max_size > mx:
        mx = child.subtree_max_size
    if exit_ and node.subtree_max_size == mx:
        return True
    node.subtree_max_size = mx
    return False


def _cb_propagate(rb: RbNode | None, stop: RbNode | None) -> None:
    while rb is not stop:
        assert isinstance(rb, VmapArea)
        if _compute_max(rb, True):
            break
        rb = rb_parent(rb)


def _cb_copy(rb_old: RbNode, rb_new: RbNode) -> None:
    assert isinstance(rb_old, VmapArea) and isinstance(rb_new, VmapArea)
    rb_new.subtree_max_size = rb_old.subtree_max_size


def _cb_rotate(rb_old: RbNode, rb_new: RbNode) -> None:
    assert isinstance(rb_old, VmapArea) and isinstance(rb_new, VmapArea)
    rb_new.subtree_max_size = rb_old.subtree_max_size
    _compute_max(rb_old, False)


FREE_VMAP_AREA_RB_AUGMENT_CB = Callbacks(_cb_propagate, _cb_copy, _cb_rotate)


def ALIGN(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


# fit types of classify_va_fit_type()
NOTHING_FIT = 0
FL_FIT_TYPE = 1  # full fit
LE_FIT_TYPE = 2  # left edge fit
RE_FIT_TYPE = 3  # right edge fit
NE_FIT_TYPE = 4  # no edge fit


class PlainLinuxVmalloc:
    """The global vmap-area allocator of Linux v5.2-v6.8 over one region ``[start, end)``.

    Addresses and sizes are bytes, as in the kernel.  ``search`` picks the rule of
    ``find_vmap_lowest_match`` (module docstring).  ``purges`` counts every
    ``__purge_vmap_area_lazy`` that released something; ``last_purge`` holds what the
    ``purge_vmap_area_lazy`` tracepoint of the last one reported (start, end, num_purged).
    """

    def __init__(self, start: int, end: int, page_size: int = 4096, search: str = "6.8") -> None:
        if search not in SEARCH_RULES:
            raise ValueError(f"search rule {search!r} not in {SEARCH_RULES}")
        self.PAGE_SIZE = page_size
        self.search = search
        self.vstart = start
        self.vend = end
        self.free_vmap_area_root = RbRoot()
        self.free_vmap_area_list = ListHead()
        self.purge_vmap_area_root = RbRoot()
        self.purge_vmap_area_list = ListHead()
        self.busy: dict[int, VmapArea] = {}  # vmap_area_root: by va_start
        self.vmap_lazy_nr = 0
        self.purges = 0
        self.last_purge: tuple[int, int, int] | None = None
        # vmap_init_free_space(): the region is one free block.
        free = VmapArea(start, end)
        self.insert_vmap_area_augment(
            free, None, self.free_vmap_area_root, self.free_vmap_area_list
        )

    # -- tree/list helpers ------------------------------------------------------------------

    def find_va_links(
        self, va: VmapArea, root: RbRoot | None, from_: RbNode | None
    ) -> tuple[Link, RbNode | None] | None:
        if root is not None:
            link: Link = (root, "node")
            if deref(link) is None:
                return link, None
        else:
            assert from_ is not None
            link = (_Holder(from_), "node")
        # Go to the bottom of the tree; the overlap check is the kernel's WARN.
        while True:
            tmp_va = deref(link)
            assert isinstance(tmp_va, VmapArea)
            if va.va_end <= tmp_va.va_start:
                link = (tmp_va, "left")
            elif va.va_start >= tmp_va.va_end:
                link = (tmp_va, "right")
            else:
                raise AssertionError(
                    f"vmalloc bug: {va.va_start:#x}-{va.va_end:#x} overlaps with "
                    f"{tmp_va.va_start:#x}-{tmp_va.va_end:#x}"
                )
            if deref(link) is None:
                break
        return link, tmp_va

    @staticmethod
    def get_va_next_sibling(parent: RbNode | None, link: Link) -> ListHead | None:
        if not parent:
            # The red-black tree where we try to find VA neighbors before merging or
            # inserting is empty.
            return None
        assert isinstance(parent, VmapArea)
        lst = parent.list
        return lst.next if link == (parent, "right") else lst

    @staticmethod
    def __link_va(
        va: VmapArea,
        root: RbRoot,
        parent: RbNode | None,
        link: Link,
        head: ListHead,
        augment: bool,
    ) -> None:
        # VA is still not in the list, but we can identify its future previous list_head
        # node.
        if parent:
            assert isinstance(parent, VmapArea)
            head = parent.list
            if link != (parent, "right"):
                head = head.prev
        # Insert to the rb-tree
        rb_link_node(va, parent, link)
        if augment:
            # The augmented value is populated bottom-up by augment_tree_propagate_from()
            # once the node is in the tree; the kernel zeroes it after the insertion.
            rb_insert_augmented(va, root, FREE_VMAP_AREA_RB_AUGMENT_CB)
            va.subtree_max_size = 0
        else:
            rb_insert_color(va, root)
        # Address-sort this list
        list_add(va.list, head)

    @staticmethod
    def __unlink_va(va: VmapArea, root: RbRoot, augment: bool) -> None:
        if augment:
            rb_erase_augmented(va, root, FREE_VMAP_AREA_RB_AUGMENT_CB)
        else:
            rb_erase(va, root)
        list_del_init(va.list)

    @staticmethod
    def augment_tree_propagate_from(va: VmapArea) -> None:
        # Populate the tree from bottom towards the root until the calculated maximum
        # available size of checked node is equal to its current one.
        _cb_propagate(va, None)

    def insert_vmap_area(self, va: VmapArea, root: RbRoot, head: ListHead) -> None:
        found = self.find_va_links(va, root, None)
        if found:
            link, parent = found
            self.__link_va(va, root, parent, link, head, False)

    def insert_vmap_area_augment(
        self, va: VmapArea, from_: RbNode | None, root: RbRoot, head: ListHead
    ) -> None:
        if from_:  # noqa: SIM108 - the kernel's if/else, kept as it is
            found = self.find_va_links(va, None, from_)
        else:
            found = self.find_va_links(va, root, None)
        if found:
            link, parent = found
            self.__link_va(va, root, parent, link, head, True)
            self.augment_tree_propagate_from(va)

    def __merge_or_add_vmap_area(
        self, va: VmapArea, root: RbRoot, head: ListHead, augment: bool
    ) -> VmapArea | None:
        merged = False
        # Find a place in the tree where VA potentially will be inserted, unless it is
        # merged with its sibling/siblings.
        found = self.find_va_links(va, root, None)
        if not found:
            return None
        link, parent = found
        # Get next node of VA to check if merging can be done.
        nxt = self.get_va_next_sibling(parent, link)
        if nxt is not None:
            # |<------VA------>|<-----Next----->|
            if nxt is not head:
                sibling = nxt.owner
                assert sibling is not None
                if sibling.va_start == va.va_end:
                    sibling.va_start = va.va_start
                    # Free vmap_area object; point to the new merged area.
                    va = sibling
                    merged = True
            # |<-----Prev----->|<------VA------>|
            if nxt.prev is not head:
                sibling = nxt.prev.owner
                assert sibling is not None
                if sibling.va_end == va.va_start:
                    # If both neighbors are coalesced, it is important to unlink the
                    # "next" node first, followed by merging with "previous" one.
                    if merged:
                        self.__unlink_va(va, root, augment)
                    sibling.va_end = va.va_end
                    va = sibling
                    merged = True
        if not merged:
            self.__link_va(va, root, parent, link, head, augment)
        return va

    def merge_or_add_vmap_area(self, va: VmapArea, root: RbRoot, head: ListHead) -> VmapArea | None:
        return self.__merge_or_add_vmap_area(va, root, head, False)

    def merge_or_add_vmap_area_augment(
        self, va: VmapArea, root: RbRoot, head: ListHead
    ) -> VmapArea | None:
        merged = self.__merge_or_add_vmap_area(va, root, head, True)
        if merged:
            self.augment_tree_propagate_from(merged)
        return merged

    # -- the search -------------------------------------------------------------------------

    @staticmethod
    def is_within_this_va(va: VmapArea, size: int, align: int, vstart: int) -> bool:
        if va.va_start > vstart:  # noqa: SIM108 - the kernel's if/else
            nva_start_addr = ALIGN(va.va_start, align)
        else:
            nva_start_addr = ALIGN(vstart, align)
        # Can be overflowed due to big size or alignment.
        if nva_start_addr + size > ULONG_MAX or nva_start_addr < vstart:
            return False
        return nva_start_addr + size <= va.va_end

    def find_vmap_lowest_match(
        self, root: RbRoot, size: int, align: int, vstart: int, adjust_search_size: bool
    ) -> VmapArea | None:
        shift_vstart = self.search != "5.2"
        # Start from the root.
        node = root.node
        # Adjust the search size for alignment overhead.
        length = size + align - 1 if adjust_search_size else size
        while node:
            va = node
            assert isinstance(va, VmapArea)
            if get_subtree_max_size(node.left) >= length and vstart < va.va_start:
                node = node.left
            else:
                if self.is_within_this_va(va, size, align, vstart):
                    return va
                # Does not make sense to go deeper towards the right sub-tree if it does
                # not have a free block that is equal or bigger to the requested search
                # length.
                if get_subtree_max_size(node.right) >= length:
                    node = node.right
                    continue
                # OK. We roll back and find the first right sub-tree, that will satisfy
                # the search criteria.
                while True:
                    node = rb_parent(node)
                    if not node:
                        break
                    va = node
                    assert isinstance(va, VmapArea)
                    if self.is_within_this_va(va, size, align, vstart):
                        return va
                    if get_subtree_max_size(node.right) >= length and vstart <= va.va_start:
                        # Shift the vstart forward, so that the same sub-tree is not
                        # entered again after it has been checked (9f531973dff3).
                        if shift_vstart:
                            vstart = va.va_start + 1
                        node = node.right
                        break
        return None

    @staticmethod
    def classify_va_fit_type(va: VmapArea, nva_start_addr: int, size: int) -> int:
        # Check if it is within VA.
        if nva_start_addr < va.va_start or nva_start_addr + size > va.va_end:
            return NOTHING_FIT
        # Now classify.
        if va.va_start == nva_start_addr:
            if va.va_end == nva_start_addr + size:
                return FL_FIT_TYPE
            return LE_FIT_TYPE
        if va.va_end == nva_start_addr + size:
            return RE_FIT_TYPE
        return NE_FIT_TYPE

    def adjust_va_to_fit_type(
        self, root: RbRoot, head: ListHead, va: VmapArea, nva_start_addr: int, size: int
    ) -> int:
        lva: VmapArea | None = None
        fit = self.classify_va_fit_type(va, nva_start_addr, size)
        if fit == FL_FIT_TYPE:
            # No need to split VA, it fully fits.
            self.__unlink_va(va, root, True)
        elif fit == LE_FIT_TYPE:
            # Split left edge of fit VA.
            va.va_start += size
        elif fit == RE_FIT_TYPE:
            # Split right edge of fit VA.
            va.va_end = nva_start_addr
        elif fit == NE_FIT_TYPE:
            # Split no edge of fit VA: build the remainder, shrink this VA.
            lva = VmapArea(va.va_start, nva_start_addr)
            va.va_start = nva_start_addr + size
        else:
            return -1
        if fit != FL_FIT_TYPE:
            self.augment_tree_propagate_from(va)
            if lva:  # type == NE_FIT_TYPE
                self.insert_vmap_area_augment(lva, va, root, head)
        return 0

    def adjust_search_size(self, size: int, align: int, vstart: int, vend: int) -> bool:
        """The rule of ``__alloc_vmap_area`` for the chosen ``search``."""
        if self.search == "5.2":
            return True
        if self.search == "exact":
            return False
        # Do not adjust when align <= PAGE_SIZE, or for a short range exactly as long as
        # the request.
        return not (align <= self.PAGE_SIZE or (align > self.PAGE_SIZE and vend - vstart == size))

    def __alloc_vmap_area(
        self, root: RbRoot, head: ListHead, size: int, align: int, vstart: int, vend: int
    ) -> int:
        adjust = self.adjust_search_size(size, align, vstart, vend)
        va = self.find_vmap_lowest_match(root, size, align, vstart, adjust)
        if not va:
            return vend
        if va.va_start > vstart:  # noqa: SIM108 - the kernel's if/else
            nva_start_addr = ALIGN(va.va_start, align)
        else:
            nva_start_addr = ALIGN(vstart, align)
        # Check the "vend" restriction.
        if nva_start_addr + size > vend:
            return vend
        # Update the free vmap_area.
        ret = self.adjust_va_to_fit_type(root, head, va, nva_start_addr, size)
        if ret:
            return vend
        return nva_start_addr

    # -- the public operations ----------------------------------------------------------------

    def alloc_vmap_area(
        self, size: int, align: int, vstart: int | None = None, vend: int | None = None
    ) -> int | None:
        """``alloc_vmap_area``: the start address, or None (``-EBUSY`` after the purge and
        the retry of the overflow path)."""
        vstart = self.vstart if vstart is None else vstart
        vend = self.vend if vend is None else vend
        if not size or size % self.PAGE_SIZE or align & (align - 1) or align <= 0:
            raise ValueError("alloc_vmap_area: -EINVAL")
        purged = False
        while True:
            addr = self.__alloc_vmap_area(
                self.free_vmap_area_root, self.free_vmap_area_list, size, align, vstart, vend
            )
            # If an allocation fails, the "vend" address is returned: the overflow path.
            if addr != vend:
                break
            if purged:
                return None
            self.reclaim_and_purge_vmap_areas()
            purged = True
        va = VmapArea(addr, addr + size)
        assert addr % align == 0 and addr >= vstart and va.va_end <= vend
        self.busy[addr] = va
        return addr

    def free_vmap_area(self, addr: int) -> int:
        """``free_vmap_area``: back to the free tree at once.  Returns the size freed."""
        va = self.busy.pop(addr)
        size = va_size(va)
        self.merge_or_add_vmap_area_augment(va, self.free_vmap_area_root, self.free_vmap_area_list)
        return size

    def free_vmap_area_noflush(self, addr: int) -> tuple[int, int]:
        """``free_vmap_area_noflush``: onto the purge tree (still unusable).  Returns what its
        tracepoint reports: (nr_lazy, the area's size)."""
        va = self.busy.pop(addr)
        size = va.va_end - va.va_start
        self.vmap_lazy_nr += size // self.PAGE_SIZE
        # Merge or place it to the purge tree/list.
        self.merge_or_add_vmap_area(va, self.purge_vmap_area_root, self.purge_vmap_area_list)
        return self.vmap_lazy_nr, size

    def __purge_vmap_area_lazy(self, start: int, end: int) -> bool:
        local_purge_list = list(list_entries(self.purge_vmap_area_list))
        self.purge_vmap_area_root = RbRoot()
        self.purge_vmap_area_list = ListHead()
        if not local_purge_list:
            return False
        start = min(start, local_purge_list[0].va_start)
        end = max(end, local_purge_list[-1].va_end)
        num_purged_areas = 0
        for va in local_purge_list:
            nr = (va.va_end - va.va_start) // self.PAGE_SIZE
            va.list = ListHead(va)  # detached: "no need to unlink it from anything"
            merged = self.merge_or_add_vmap_area_augment(
                va, self.free_vmap_area_root, self.free_vmap_area_list
            )
            if not merged:
                continue
            self.vmap_lazy_nr -= nr
            num_purged_areas += 1
        self.purges += 1
        self.last_purge = (start, end, num_purged_areas)
        return num_purged_areas > 0

    def reclaim_and_purge_vmap_areas(self) -> None:
        self.__purge_vmap_area_lazy(ULONG_MAX, 0)

    def purge_vmap_area_lazy(self) -> bool:
        """What the drain work (or ``vm_unmap_aliases``) runs: release every lazy area."""
        return self.__purge_vmap_area_lazy(ULONG_MAX, 0)

    # -- inspection (not in the kernel) -------------------------------------------------------

    def free_blocks(self) -> list[tuple[int, int]]:
        """The free list, in address order."""
        return [(va.va_start, va.va_end) for va in list_entries(self.free_vmap_area_list)]

    def lazy_blocks(self) -> list[tuple[int, int]]:
        """The purge list (merged lazily freed areas), in address order."""
        return [(va.va_start, va.va_end) for va in list_entries(self.purge_vmap_area_list)]

    def check(self) -> None:
        """Red-black and augmented invariants of the free tree; list order = in-order walk."""
        inorder: list[VmapArea] = []

        def walk(node: RbNode | None, parent: RbNode | None) -> tuple[int, int]:
            if node is None:
                return 1, 0
            assert isinstance(node, VmapArea)
            assert node.parent is parent, "parent pointer"
            if node.color == RB_RED:
                for child in (node.left, node.right):
                    assert child is None or child.color == RB_BLACK, "red node with red child"
            lb, lmax = walk(node.left, node)
            inorder.append(node)
            rb, rmax = walk(node.right, node)
            assert lb == rb, "black height"
            mx = max(va_size(node), lmax, rmax)
            assert node.subtree_max_size == mx, (
                f"subtree_max_size {node.subtree_max_size:#x} != {mx:#x} at {node.va_start:#x}"
            )
            return lb + (node.color == RB_BLACK), mx

        root = self.free_vmap_area_root.node
        assert root is None or root.color == RB_BLACK, "red root"
        walk(root, None)
        listed = list(list_entries(self.free_vmap_area_list))
        assert [id(v) for v in listed] == [id(v) for v in inorder], "list order"
        for a, b in pairwise(listed):
            assert a.va_end < b.va_start, "free blocks overlap or touch (not merged)"


class _Holder:
    """The ``link = &from`` of ``find_va_links``: a pointer variable holding a node."""

    __slots__ = ("node",)

    def __init__(self, node: RbNode) -> None:
        self.node = node
